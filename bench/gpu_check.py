"""The GPU check: pgolf's CUDA path measured on one GPU in about 5 minutes, prepared before any GPU is seen.

Commands (from the repository root)::

    bash bench/gpu_check.sh --prepare       # here, with network: wheels + a small dataset into data/gpu_check/
    bash bench/gpu_check.sh                 # on the GPU machine (carry data/gpu_check): JSON + one table
    bash bench/gpu_check.sh --dry-run       # the same code path on the CPU, tiny shapes, seconds
    GPU_CHECK_DRY_RUN=1 python bench/gpu_check.py

What it runs, each section on its own clock (a section that fails is recorded, the next one runs; a
section that would pass the deadline, ``--budget-s``, is skipped and says so):

1. ``cuda_tests``: the CUDA-only tests with pytest (varlen FlashAttention vs its reference in
   ``tests/test_model_varlen.py``, the fused kernels vs theirs and the compiled model in ``tests/test_fused.py``).
2. ``compile``: a small GPT with every accelerator on (fused kernels, varlen attention), compiled vs eager.
3. ``steps``: full-size ``record-0427`` and ``baseline`` on one GPU, compiled, bf16 autocast. One micro-batch
   is one GPU's share of the record's batch (batch_tokens / 8, as on 8×H100); the one-GPU step is
   grad_accum × micro-batch + the optimizer step, compared with :func:`pgolf.preflight.preflight`'s
   ``1xH100`` prediction per phase (plain / looped); tokens/s per GPU of the micro-batches against the
   record's 786,432 tokens per 121.7 ms over 8 GPUs (≈808 k tokens/s per GPU); peak memory. The bar
   (issue 23): record-0427 within 10 % of the prediction and ≥ 90 % of the record's tokens/s per GPU.
   A ``record-0427 fused`` row repeats it with ``model.fused_kernels=on``.
4. ``e2e``: ``baseline`` trained briefly on the carried dataset through :func:`pgolf.runner.run` (train →
   export → reload → eval with the preset's method): val_bpb, artifact bytes.

Output: one JSON (``--out``, default ``$OUT/gpu_check.json`` where ``$OUT`` is set, else
``runs/gpu_check.json``) and one table on stdout. Nothing is downloaded; the GPU machine lacks
zstandard/brotli/pytest, which ``gpu_check.sh`` installs from ``data/gpu_check/wheels``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

RECORD_TOKENS_PER_S_PER_GPU = 786_432 / 0.1217 / 8
"""[04-27a]: 786,432 tokens per 121.7 ms step over 8 GPUs (CATALOGUE §3)."""
TINY = ["model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1", "model.vocab_size=256",
        "train.seq_len=32", "train.batch_tokens=512", "model.embed.bigram_buckets=0"]
"""Dry-run shapes: the preset's depth and switches, a 32-wide model, 32-token sequences."""


class Check:
    def __init__(self, dry: bool, budget_s: float, data: Path) -> None:
        self.dry, self.data = dry, data
        self.device = torch.device("cpu" if dry else "cuda")
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.results: dict[str, Any] = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def section(self, name: str, fn, need_s: float = 0.0) -> None:
        if self.left() < need_s:
            self.results[name] = {"status": "skipped", "why": f"{self.left():.0f} s left of the budget, needs ~{need_s:.0f}"}
            return
        t = time.perf_counter()
        try:
            out = fn()
            self.results[name] = {"status": "ok", **(out or {})}
        except Exception as e:  # a section's failure is a result, not the end of the check
            self.results[name] = {"status": "fail", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                  "traceback": traceback.format_exc()[-3000:]}
        self.results[name]["seconds"] = round(time.perf_counter() - t, 2)


# --------------------------------------------------------------------------- sections


def environment(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu"}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def cuda_tests(dry: bool) -> dict[str, Any]:
    """pytest on the CUDA-only tests (under the dry run: the same command on a selection that skips on the CPU)."""
    sel = (["tests/test_fused.py", "-k", "linear_leaky_relu2_matches_reference"] if dry else
           ["tests/test_model_varlen.py::test_flash_varlen_equals_the_reference_on_cuda", "tests/test_fused.py",
            "-k", "not interpreter"])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *sel]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-300:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if r.returncode not in (0, 5):
        raise RuntimeError(f"pytest rc {r.returncode}: {tail}; {'; '.join(failed[:5])}")
    return {"summary": tail, **counts, "command": " ".join(cmd[2:])}


def compile_check(dev: torch.device, dry: bool) -> dict[str, Any]:
    """A small GPT with the accelerators on, compiled (inductor; the dry run: dynamo's eager backend) vs eager."""
    from pgolf.compile import compile_model
    from pgolf.config import ModelConfig
    from pgolf.model.gpt import GPT

    cfg = ModelConfig(vocab_size=512, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_act="leaky_relu2",
                      fused_kernels="auto")
    cfg = type(cfg)(**{**cfg.__dict__, "attn": type(cfg.attn)(**{**cfg.attn.__dict__, "doc_mask": True})})
    torch.manual_seed(0)
    m = GPT(cfg).to(dev)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    idx = torch.randint(0, 512, (4, 128), device=dev)
    idx[:, ::37] = cfg.embed.bos_id  # several documents per row
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with torch.autocast(dev.type, dtype=dt, enabled=dev.type == "cuda"):
        eager = m(idx, idx)
        eager.backward()
        g_eager = m.tok_emb.weight.grad.clone()
        m.zero_grad()
        c = torch.compile(m, backend="eager") if dry else compile_model(m)
        comp = c(idx, idx)
        comp.backward()
    diff = abs(comp.item() - eager.item())
    gdiff = (m.tok_emb.weight.grad - g_eager).abs().max().item()
    ok = diff < 2e-2 and gdiff < 2e-2
    if not ok:
        raise AssertionError(f"compiled loss {comp.item():.5f} vs eager {eager.item():.5f}, grad diff {gdiff:.3g}")
    backend = "eager" if dry else "inductor"
    return {"summary": f"{backend}: loss {comp.item():.5f} vs eager {eager.item():.5f}, grad diff {gdiff:.2g}",
            "loss_eager": eager.item(), "loss_compiled": comp.item(), "max_grad_diff": gdiff,
            "backend": "eager" if dry else "inductor"}


def step_row(name: str, sets: list[str], dev: torch.device, dry: bool, deadline: float) -> dict[str, Any]:
    """ms/step of preset ``name`` on one device vs preflight's 1xH100 prediction, tokens/s per GPU, peak memory."""
    from pgolf.compile import compile_model
    from pgolf.config import apply_overrides
    from pgolf.model.gpt import GPT
    from pgolf.optim import build_optimizers
    from pgolf.precision import autocast, resolve_amp
    from pgolf.preflight import preflight
    from pgolf.presets import get_preset

    full = apply_overrides(get_preset(name), sets)
    pred = preflight(full, "1xH100", artifact_bytes=0)
    cfg = apply_overrides(full, TINY) if dry else full
    t = cfg.train
    micro_seqs = max(1, t.batch_tokens // t.seq_len // 8)  # one GPU's share of the record's batch
    accum = t.batch_tokens // (micro_seqs * t.seq_len)
    prec = resolve_amp("bf16" if dev.type == "cuda" else "fp32", dev)
    phases = {}
    peak = 0
    for phase in pred.ms_per_step_phases:
        if time.perf_counter() > deadline:
            phases[phase] = {"status": "skipped (budget)"}
            continue
        looping = phase == "looped" or (cfg.model.recur.loops > 0 and len(pred.ms_per_step_phases) == 1)
        torch.manual_seed(0)
        model = GPT(cfg.model).to(dev)
        model.looping = looping
        opts = build_optimizers(model, cfg.optim)
        fwd = model if dry else compile_model(model, fullgraph=cfg.train.compile_fullgraph)  # as the record
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, cfg.model.vocab_size, (micro_seqs, t.seq_len + 1), generator=g).to(dev)
        inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

        def micro(fwd=fwd, inp=inp, tgt=tgt) -> None:
            with autocast(prec, dev):
                loss = fwd(inp, tgt)
            loss.backward()

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t_compile = time.perf_counter()
        for _ in range(1 if dry else 2):  # compilation and warm-up, untimed
            micro()
        sync()
        t_compile = time.perf_counter() - t_compile
        n = 1 if dry else 5
        sync()
        t1 = time.perf_counter()
        for _ in range(n):
            micro()
        sync()
        micro_ms = 1000 * (time.perf_counter() - t1) / n
        t2 = time.perf_counter()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        sync()
        opt_ms = 1000 * (time.perf_counter() - t2)
        ms = accum * micro_ms + opt_ms
        predicted = pred.ms_per_step_phases[phase]
        tok_s = micro_seqs * t.seq_len / (micro_ms / 1000)
        phases[phase] = {"ms_per_step": ms, "predicted_ms": predicted, "vs_prediction": ms / predicted - 1,
                         "micro_ms": micro_ms, "optimizer_ms": opt_ms, "grad_accum": accum,
                         "micro_tokens": micro_seqs * t.seq_len, "tokens_per_s_per_gpu": tok_s,
                         "vs_record_tokens_per_s": tok_s / RECORD_TOKENS_PER_S_PER_GPU, "warmup_s": t_compile}
        if dev.type == "cuda":
            peak = max(peak, torch.cuda.max_memory_allocated())
        model = opts = fwd = micro = None  # free this phase's graphs before the next
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"preset": name, "sets": sets, "predicted_ms_per_step": pred.ms_per_step, "phases": phases,
            "peak_memory_gib": peak / 2**30, "shapes": "tiny (dry run)" if dry else "full"}


def e2e(dev: torch.device, dry: bool, data: Path, out_dir: Path) -> dict[str, Any]:
    """``baseline`` on the carried dataset: train briefly → export → reload → eval (:func:`pgolf.runner.run`)."""
    from pgolf.config import apply_overrides
    from pgolf.presets import get_preset
    from pgolf.runner import run

    if not (data / "manifest.json").is_file():
        raise FileNotFoundError(f"{data}: no dataset (run `bash bench/gpu_check.sh --prepare` first and carry it)")
    vocab = json.loads((data / "manifest.json").read_text())["vocab_size"]
    sets = [f"data.path={data}", f"model.vocab_size={vocab}", f"train.device={dev.type}", "train.val_every=0"]
    sets += (TINY[:3] + ["train.seq_len=64", "train.batch_tokens=512", "train.iterations=2", "train.warmup_steps=0",
                         "data.val_max_tokens=4096", "train.max_wallclock_seconds=0", "train.compile=false"] if dry else
             ["train.max_wallclock_seconds=25", "data.val_max_tokens=262144", "train.compile=true"])
    cfg = apply_overrides(get_preset("baseline"), sets)
    m = run(cfg, out_dir / "e2e", progress=False)
    keys = ("val_bpb", "pre_quant_val_bpb", "quant_gap_bpb", "artifact_bytes", "steps", "train_seconds",
            "tokens_per_second", "eval_seconds", "eval_method")
    return {k: m.get(k) for k in keys} | {"eval_method": m.get("eval_method") or cfg.eval.method, "sets": sets}


# --------------------------------------------------------------------------- report


def table(res: dict[str, Any]) -> str:
    env = res.get("env", {})
    lines = [f"GPU check on {env.get('device')} (torch {env.get('torch')}, triton {env.get('triton')})"
             + (" — DRY RUN (CPU, tiny shapes: no figure here is a GPU figure)" if res["dry_run"] else ""),
             f"{'check':<34} {'result':<64}"]

    def row(a: str, b: str) -> None:
        lines.append(f"{a:<34} {b}")

    for name in ("cuda_tests", "compile"):
        r = res.get(name, {})
        row(name, f"{r.get('status')}: {r.get('summary') or r.get('error') or r.get('why') or ''}"[:100])
    for key, r in res.get("steps", {}).items():
        if r.get("status") != "ok":
            row(f"step {key}", f"{r.get('status')}: {r.get('error') or r.get('why', '')}"[:100])
            continue
        for phase, p in r["phases"].items():
            if "ms_per_step" not in p:
                row(f"step {key} [{phase}]", p.get("status", ""))
                continue
            row(f"step {key} [{phase}]",
                f"{p['ms_per_step']:.1f} ms/step vs {p['predicted_ms']:.1f} predicted ({100 * p['vs_prediction']:+.1f} %); "
                f"{p['tokens_per_s_per_gpu'] / 1e3:.0f} k tok/s/GPU ({100 * p['vs_record_tokens_per_s']:.0f} % of record); "
                f"peak {r['peak_memory_gib']:.1f} GiB")
    r = res.get("e2e", {})
    row("e2e baseline (train→export→eval)", f"{r.get('status')}: " + (
        f"val_bpb {r['val_bpb']:.4f} ({r['eval_method']}), {r['steps']} steps, artifact {r['artifact_bytes']:,} B"
        if r.get("status") == "ok" else str(r.get("error") or r.get("why"))[:90]))
    bar = res.get("bar")
    if bar:
        row("bar (record-0427)", bar + (" (dry run: not a measurement)" if res["dry_run"] else ""))
    lines.append(f"total {res['seconds']:.0f} s")
    return "\n".join(lines)


def bar(res: dict[str, Any]) -> str | None:
    r = res.get("steps", {}).get("record-0427", {})
    ph = [p for p in r.get("phases", {}).values() if "ms_per_step" in p]
    if r.get("status") != "ok" or not ph:
        return None
    within = all(abs(p["vs_prediction"]) <= 0.10 for p in ph)
    fast = all(p["vs_record_tokens_per_s"] >= 0.90 for p in ph)
    return f"ms/step within 10 % of preflight: {'yes' if within else 'NO'}; tokens/s/GPU ≥ 90 % of record: {'yes' if fast else 'NO'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the CPU, tiny shapes (also GPU_CHECK_DRY_RUN=1)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--budget-s", type=float, default=270.0, help="deadline for the whole check")
    ap.add_argument("--data", type=Path, default=ROOT / "data/gpu_check/data")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out (cuda_tests,compile,steps,e2e)")
    a = ap.parse_args(argv)
    dry = a.dry_run or os.environ.get("GPU_CHECK_DRY_RUN") == "1"
    if not dry and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (use --dry-run on the CPU)", file=sys.stderr)
        return 2
    out = a.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "runs") / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    c = Check(dry, a.budget_s, a.data)
    c.results["env"] = environment(c.device)
    if "cuda_tests" not in skip:
        c.section("cuda_tests", lambda: cuda_tests(dry), need_s=20)
    if "compile" not in skip:
        c.section("compile", lambda: compile_check(c.device, dry), need_s=20)
    steps: dict[str, Any] = {}
    rows = [("record-0427", []), ("baseline", []),  # the dry run cannot run the kernels: its fused row is auto
            ("record-0427 fused", [f"model.fused_kernels={'auto' if dry else 'on'}"])]
    e2e_need = 5 if dry else 75
    for key, sets in ([] if "steps" in skip else rows):
        if c.left() < e2e_need + (0 if dry else 40):
            steps[key] = {"status": "skipped", "why": f"{c.left():.0f} s left (kept for e2e)"}
            continue
        t = time.perf_counter()
        deadline = c.t0 + c.budget_s - e2e_need
        try:
            steps[key] = {"status": "ok", **step_row(key.split()[0], sets, c.device, dry, deadline)}
        except Exception as e:
            steps[key] = {"status": "fail", "error": f"{type(e).__name__}: {e}"[:300], "traceback": traceback.format_exc()[-3000:]}
        steps[key]["seconds"] = round(time.perf_counter() - t, 2)
    c.results["steps"] = steps
    if "e2e" not in skip:
        c.section("e2e", lambda: e2e(c.device, dry, a.data, out.parent / "gpu_check_runs"), need_s=e2e_need)
    res = {"dry_run": dry, **c.results, "seconds": time.perf_counter() - c.t0}
    res["bar"] = bar(res)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(table(res))
    print(f"wrote {out}")
    failed = [k for k, v in c.results.items() if isinstance(v, dict) and v.get("status") == "fail"]
    failed += [f"steps:{k}" for k, v in steps.items() if v.get("status") == "fail"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
