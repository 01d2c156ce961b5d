"""Size a CPU run to the machine it runs on: depth, width and batch from a short throughput probe.

Why: CPUs of the same kind differ by 10–100× here (an AMX Xeon at 3.3 TFLOP/s bf16, an AVX2-only EPYC at
0.034 TFLOP/s fp32). A fixed shape tuned on a fast machine is badly under-trained on a slow one: the
old ``cpu`` shape (3L×192, 8K-token batch) got 231 steps in 600 s there and lost to the official
baseline's shape ported to the CPU (4L×128, 16K batch). So ``train.autosize`` picks the shape from the
compute this machine delivers within the budget.

The rule (documented, deterministic given the probe):

1. **Probe.** Time real training steps (random tokens, compiled when ``train.compile``, in the precision
   ``train.amp_dtype`` resolves to) of the reference shape — the config as given — at every candidate
   batch B ∈ :data:`BATCHES` (:func:`pgolf.preflight.measure_cpu_ms_per_token`; each point the fastest of
   5 timed steps at the run's thread count). A line through the two smallest batches, ms/step = o +
   B·F(ref)/R, gives a per-step overhead o (optimizer, launches), taken to scale with the parameter
   count, and the line's rate R; when it is not physical (the larger batch no slower than noise allows:
   slope ≤ 0 or o < 0), o = 0. Each batch then gets its own effective rate R(B) = B·F(ref)/(ms(B) − o),
   so the prediction reproduces the probe at the reference shape exactly. (Until 2026-12 the probe timed
   2K and 8K and extrapolated the line to 16K: on an AMX Xeon 3L×192 then ran 12.5 % slower per step at
   16K than predicted — 14–20 % slower per token than at 8K, caches — and the rule chose 16K for 4 % more
   tokens that it never got.)
2. **Predict** for every candidate shape s (grid :data:`LAYERS` × :data:`DIMS`, head_dim 32, GQA 2:1 where
   the head count allows) and batch B: ms/step(s, B) = o·N_s/N_ref + B·F(s)/R(B), with F the matmul
   FLOPs per training token (:mod:`pgolf.model.flops`) at the run's sequence length; steps S = budget /
   ms/step; tokens D = S·B. With a progressive sequence length (``train.seq_len_stages``) each stage gets
   its share w_i of the clock at its own F: S = Σ_i w_i·budget / ms/step(s, B, T_i), and B must hold
   whole sequences of every stage. (R(B) is measured on the reference shape at ``train.seq_len``; a
   narrower shape's activations fit caches at a larger B, so its slowdown at large B may be smaller than
   predicted.)
3. **Constrain.** The model's estimated compressed bytes (N_s × the bytes per parameter the byte planner
   predicts for the reference shape under the run's export scheme — one planner call, not one per
   candidate; the chosen shape is re-estimated exactly) times 1 + ``train.autosize_bytes_margin`` (0.2:
   the estimate is made before training, and a trained model compresses 12–16 % worse) must be ≤
   ``train.autosize_model_bytes`` (the CPU track's 1,000,000) (:func:`fits_cap`), and S ≥
   ``train.autosize_min_steps`` — or, when no shape reaches it (60 s on a slow CPU), S ≥ half the most
   steps any shape gets (:func:`step_floor`)
   (the schedule — momentum warm-up, warmdown — needs steps, not only tokens).
4. **Choose** the (s, B) minimising the Chinchilla loss law L(N, D) = E + A/N^α + B/D^β with the fitted
   constants of Hoffmann et al. 2022 (Approach 3: E 1.69, A 406.4, B 410.7, α 0.34, β 0.28; N all
   parameters, D training tokens); ties → fewer parameters. Among batches the law prefers the one that
   sees the most tokens; the step floor stops it from trading all steps away.

The law was fitted on far larger models; it is used here for the *shape* of the trade-off (how many
parameters a given number of tokens can feed), and the result is checked by measurement, side by side
(docs/benchmarks.md "CPU recipes side by side"). The probe runs before the training clock starts (as compile warm-up
does) and its seconds are logged; the choice and the table are in the run log, and ``config.json``
holds the resolved shape, so ``--resume`` and exports never re-probe.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from pgolf.config import RunConfig, apply_changes
from pgolf.errors import ConfigError

NEEDED_WHEN = "train.autosize"

LAYERS: tuple[int, ...] = (2, 3, 4, 5, 6)
DIMS: tuple[int, ...] = (96, 128, 160, 192, 256)
BATCHES: tuple[int, ...] = (4096, 8192, 16384)
HEAD_DIM = 32
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Approach 3 fit."""


def chinchilla_loss(n_params: float, tokens: float) -> float:
    """L(N, D) = E + A/N^α + B/D^β (nats per token in the paper's units; only the ordering is used)."""
    c = CHINCHILLA
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / max(tokens, 1.0) ** c["beta"]


@dataclass(frozen=True)
class StepTimeModel:
    """The probe's time model: ms/step = overhead_ms·(N/N_ref) + 1000·B·F/R(B)."""

    flops: float
    """R: effective training FLOP/s of the line through the two smallest probed batches."""
    overhead_ms: float
    """o: per-step time that does not scale with the batch, at the reference parameter count."""
    ref_params: int
    seconds: float
    """Wallclock of the probe."""
    batch_flops: dict[int, float] = field(default_factory=dict)
    """R(B): the effective rate measured at each probed batch B (a batch not probed gets the line's R)."""

    def ms_per_step(self, params: int, flops_per_token: float, batch: int) -> float:
        r = self.batch_flops.get(batch, self.flops)
        return self.overhead_ms * params / self.ref_params + 1000.0 * batch * flops_per_token / r


@dataclass(frozen=True)
class Candidate:
    """One shape the autosizer considered: its params, predicted bytes, ms/step (:class:`StepTimeModel`), steps,
    tokens and Chinchilla loss."""

    num_layers: int
    model_dim: int
    num_heads: int
    num_kv_heads: int
    batch_tokens: int
    params: int
    model_bytes: int
    ms_per_step: float
    steps: int
    tokens: int
    loss: float

    def changes(self) -> dict[str, object]:
        return {"model.num_layers": self.num_layers, "model.model_dim": self.model_dim,
                "model.num_heads": self.num_heads, "model.num_kv_heads": self.num_kv_heads,
                "train.batch_tokens": self.batch_tokens}

    def describe(self) -> str:
        return (f"{self.num_layers}L×{self.model_dim} ({self.num_heads} heads, {self.num_kv_heads} kv), batch "
                f"{self.batch_tokens:,}: {self.params:,} params, ≈{self.model_bytes:,} model bytes, "
                f"{self.ms_per_step:.1f} ms/step → {self.steps:,} steps, {self.tokens:,} tokens, L {self.loss:.4f}")


def heads_for(dim: int) -> tuple[int, int]:
    """(heads, kv heads): head_dim 32; kv = heads/2 when even, else 1 (both divide)."""
    h = dim // HEAD_DIM
    return h, (h // 2 if h % 2 == 0 else 1)


def probe(cfg: RunConfig, batches: tuple[int, ...] = BATCHES) -> StepTimeModel:
    """Measure :class:`StepTimeModel` on ``cfg``'s own shape at each of ``batches`` (rounded to whole sequences)."""
    from pgolf.model.flops import train_flops_per_token
    from pgolf.model.gpt import count_params
    from pgolf.preflight import measure_cpu_ms_per_token

    t0 = time.perf_counter()
    seq = cfg.train.seq_len
    sizes = sorted({max(seq, b // seq * seq) for b in batches})
    if len(sizes) < 2:
        raise ConfigError(f"train.autosize: the probe needs two batch sizes of whole {seq}-token sequences")
    ms = {}
    for b in sizes:
        c = apply_changes(cfg, [("train.batch_tokens", b)])
        ms[b] = measure_cpu_ms_per_token(c, None, steps=5, max_seconds=1e9) * b  # ms/step at batch b
    b0, b1 = sizes[:2]
    per_token = (ms[b1] - ms[b0]) / (b1 - b0)  # ms per token
    overhead = ms[b0] - b0 * per_token
    if per_token <= 0 or overhead < 0:  # not a physical line (timing noise): all of the time scales with B
        per_token, overhead = ms[b1] / b1, 0.0
    f = train_flops_per_token(cfg.model, seq)
    # each batch's own rate; the floor keeps a point that noise put under the overhead finite
    per_batch = {b: f * b / (max(ms[b] - overhead, 0.05 * ms[b]) / 1000.0) for b in sizes}
    return StepTimeModel(flops=f / (per_token / 1000.0), overhead_ms=overhead, ref_params=count_params(cfg.model),
                seconds=time.perf_counter() - t0, batch_flops=per_batch)


def shapes(cfg: RunConfig) -> tuple[list[tuple[int, int, RunConfig]], dict[tuple[int, int], str]]:
    """Every candidate shape (layers × width, heads from :func:`heads_for`) as ``(layers, dim, config)``, and
    the shapes ``cfg`` cannot take with the one-line reason (a layer list naming a layer that a shallower
    model lacks, say). Checked before the probe, so a run never spends it on a config no shape can hold."""
    ok: list[tuple[int, int, RunConfig]] = []
    bad: dict[tuple[int, int], str] = {}
    for layers in LAYERS:
        for dim in DIMS:
            h, kv = heads_for(dim)
            try:
                c = apply_changes(cfg, [("model.num_layers", layers), ("model.model_dim", dim),
                                        ("model.num_heads", h), ("model.num_kv_heads", kv)])
            except ConfigError as e:
                bad[(layers, dim)] = str(e)
                continue
            ok.append((layers, dim, c))
    return ok, bad


def check_shapes(cfg: RunConfig, log=print) -> None:
    """ConfigError (one line) when no candidate shape can hold ``cfg``; a log line naming the depths left out
    when some cannot (e.g. ``model.attn.xsa_layers=2`` rules out 2 layers: use -1 to follow the depth)."""
    ok, bad = shapes(cfg)
    if not bad:
        return
    first = next(iter(bad.values()))
    if not ok:
        raise ConfigError(f"train.autosize: no candidate shape can hold this config ({first}); count layers from the "
                          "end (negative indices) so they follow the depth, or set the shape and train.autosize=false")
    depths = sorted({layers for layers, _ in bad})
    log(f"autosize: left out {len(bad)} candidate shapes ({', '.join(f'{d}L' for d in depths)}): {first}")


def fits_cap(model_bytes: int, cfg: RunConfig) -> bool:
    """Step 3's byte test: the estimate with its margin for what training adds is within the cap."""
    t = cfg.train
    return model_bytes * (1 + t.autosize_bytes_margin) <= t.autosize_model_bytes


def choose(cfg: RunConfig, rate: StepTimeModel) -> tuple[Candidate, list[Candidate]]:
    """Step 2–4 of the rule: the best feasible candidate and every feasible one (best first)."""
    from pgolf.export.planner import estimate_artifact_bytes
    from pgolf.model.flops import train_flops_per_token
    from pgolf.model.gpt import count_params

    t = cfg.train
    budget_ms = 1000.0 * (t.max_wallclock_seconds - t.calib_reserve_seconds)
    if budget_ms <= 0:
        raise ConfigError("train.autosize needs a wallclock budget (train.max_wallclock_seconds > 0)")
    per_param = estimate_artifact_bytes(cfg).model_bytes / count_params(cfg.model)
    weights = cfg.train.seq_len_shares()
    in_cap: list[Candidate] = []
    for layers, dim, c in shapes(cfg)[0]:  # the shapes this config can take (check_shapes said which it cannot)
        h, kv = c.model.num_heads, c.model.num_kv_heads
        n = count_params(c.model)
        mb = round(n * per_param)
        if not fits_cap(mb, cfg):
            continue
        stages = [(w, train_flops_per_token(c.model, seq)) for seq, w in weights]
        for b in BATCHES:
            if any(b % seq for seq, _ in weights):
                continue
            if len(stages) == 1:
                ms = rate.ms_per_step(n, stages[0][1], b)
                steps = min(t.iterations, int(budget_ms // ms))
            else:  # each stage of a progressive sequence length gets its share of the clock at its own cost
                steps_f = sum(w * budget_ms / rate.ms_per_step(n, f, b) for w, f in stages)
                steps, ms = min(t.iterations, int(steps_f)), budget_ms / steps_f
            in_cap.append(Candidate(layers, dim, h, kv, b, n, mb, ms, steps, steps * b,
                                 chinchilla_loss(n, steps * b)))
    if not in_cap or max(ch.steps for ch in in_cap) < 1:
        raise ConfigError(f"train.autosize: no candidate shape fits {t.autosize_model_bytes:,} model bytes and "
                          f"trains a step in {t.max_wallclock_seconds:g} s on this machine")
    feasible = [ch for ch in in_cap if ch.steps >= step_floor(cfg, in_cap)]
    feasible.sort(key=lambda ch: (round(ch.loss, 6), ch.params))
    for i, ch in enumerate(feasible):  # the winner's bytes from the planner itself; the next one if it misses
        exact = estimate_artifact_bytes(apply_changes(cfg, list(ch.changes().items()))).model_bytes
        if fits_cap(exact, cfg):
            best = dataclasses.replace(ch, model_bytes=exact)
            return best, [best, *feasible[:i], *feasible[i + 1:]]
    raise ConfigError(f"train.autosize: no candidate fits {t.autosize_model_bytes:,} model bytes by the byte planner")


def step_floor(cfg: RunConfig, candidates: list[Candidate]) -> int:
    """The fewest steps a candidate may get: ``train.autosize_min_steps``, or, when no candidate reaches
    it (a short budget on a slow machine: 60 s on an AVX2-only EPYC), half the most steps any candidate
    gets — the step-rich half of the grid stays eligible rather than the run refusing to start."""
    most = max(ch.steps for ch in candidates)
    return cfg.train.autosize_min_steps if most >= cfg.train.autosize_min_steps else max(most // 2, 1)


CACHE_FILE = "autosize.json"
RULE_VERSION = 3
"""Part of the cache key: a choice made by an earlier rule (1: the probe's line extrapolated to 16K; 2: a
progressive sequence length priced as if it ran at its last length throughout) is not reused."""


def machine_key(cfg: RunConfig) -> str:
    """What a choice depends on: this machine (CPU model, flags, cores, torch threads and version) and
    ``cfg`` without the fields that do not change the speed or the rule (seed, data paths, name)."""
    import hashlib
    import json
    import os

    import torch

    from pgolf.precision import cpu_flags, cpu_model

    base = apply_changes(cfg, [("train.seed", 0), ("data.path", ""), ("data.tokenizer", ""),
                               ("train.autosize_cache", True)])
    d = base.to_dict()
    d.pop("name", None)
    threads = cfg.train.threads or torch.get_num_threads()
    key = {"rule": RULE_VERSION, "cpu": cpu_model(), "flags": sorted(cpu_flags()), "cores": os.cpu_count(),
           "threads": threads, "torch": torch.__version__, "config": d}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _cache_table() -> dict:
    """The cache file's ``{key: entry}`` (empty when missing, unreadable or not a JSON object)."""
    import json

    from pgolf.fileio import cache_root

    try:
        table = json.loads((cache_root() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _cached(key: str) -> dict | None:
    entry = _cache_table().get(key)
    return entry if isinstance(entry, dict) and isinstance(entry.get("changes"), dict) else None


def _remember(key: str, entry: dict) -> None:
    from pgolf import fileio

    table = {**_cache_table(), key: entry}
    try:
        path = fileio.cache_root() / CACHE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_json(path, table)
    except OSError:  # a read-only home: the run goes on, the next one probes again
        pass


def resolve(cfg: RunConfig, log=print) -> RunConfig:
    """``cfg`` with its shape chosen by the rule when ``train.autosize`` is on (else ``cfg`` unchanged).
    The result has ``train.autosize`` off, so resolving twice (resume, export) never re-probes. With
    ``train.autosize_cache`` a choice made before for this machine and configuration is reused."""
    if not cfg.train.autosize:
        return cfg
    from pgolf import dist

    if dist.world_size() > 1:
        raise ConfigError("train.autosize sizes a single-process CPU run; set the shape explicitly for torchrun")
    check_shapes(cfg, log)  # before the cache and the probe: a config no shape can hold costs nothing
    key = machine_key(cfg) if cfg.train.autosize_cache else None
    hit = _cached(key) if key else None
    if hit is not None:
        log(f"autosize: reused the shape chosen on {hit.get('date', '?')} for this machine and config "
            f"(key {key}; train.autosize_cache=false probes again): {hit.get('choice', '')}")
        out = apply_changes(cfg, [*hit["changes"].items(), ("train.autosize", False)])
        return dataclasses.replace(out, name=cfg.name)
    rate = probe(cfg)
    best, table = choose(cfg, rate)
    floor = min(ch.steps for ch in table)
    if floor < cfg.train.autosize_min_steps:
        log(f"autosize: no shape reaches train.autosize_min_steps={cfg.train.autosize_min_steps} in "
            f"{cfg.train.max_wallclock_seconds:g} s here; step floor relaxed to half the most any shape gets")
    per_batch = ", ".join(f"{b // 1024}K {r / 1e9:.2f}" for b, r in sorted(rate.batch_flops.items()))
    log(f"autosize: probe {rate.seconds:.1f} s (outside the training clock): R {per_batch} GFLOP/s by batch, "
        f"overhead {rate.overhead_ms:.1f} ms/step at {rate.ref_params:,} params; {len(table)} feasible candidates")
    for ch in table[:5]:
        log(f"autosize:   {ch.describe()}")
    log(f"autosize: chose {best.describe()}")
    if key:
        _remember(key, {"changes": best.changes(), "choice": best.describe(), "date": time.strftime("%Y-%m-%d %H:%M"),
                        "probe": {"flops": rate.flops, "overhead_ms": rate.overhead_ms, "seconds": rate.seconds,
                                  "batch_flops": {str(b): r for b, r in rate.batch_flops.items()}}})
    out = apply_changes(cfg, [*best.changes().items(), ("train.autosize", False)])
    return dataclasses.replace(out, name=cfg.name)


def resolve_for_run(cfg: RunConfig, out_dir, *, resume: bool) -> tuple[RunConfig, list[str]]:
    """:func:`resolve` for a run directory: on ``--resume`` the shape recorded in its ``config.json`` is
    kept (never re-probed). Returns the config and the log lines of the choice."""
    from pathlib import Path

    from pgolf.config import load_config

    if not cfg.train.autosize:
        return cfg, []
    saved = Path(out_dir) / "config.json"
    if resume and saved.exists():
        return load_config(str(saved)), [f"autosize: resumed with the shape recorded in {saved}"]
    lines: list[str] = []
    return resolve(cfg, log=lines.append), lines
