"""Export driver: state dict → quantized, compressed artifact, and back (CATALOGUE §1.7, §2.5).

An *export scheme* is a named recipe: which grid each tensor gets and how the parts are compressed.

- ``int8_zlib`` — the baseline [03-17b] (root ``train_gpt.py``): :func:`pgolf.quant.grid.int8_policy`
  (per-row int8 at the 99.99984th percentile; floats of ≤ ``export.keep_float_max_numel`` elements
  kept fp32 (control) / fp16) + ``zlib-9`` over one payload (container v1).
- ``int6_gptqlite_zstd`` — after [03-22] (PR #414), not its exact code: attention and MLP matrices int6
  per row with GPTQ-lite's clip search (five quantiles of |w|, one per matrix), plain rounding, *without*
  the record's 1/31 step floor and whatever their size; embeddings / LM head per-row int8; small floats as
  the baseline (control fp32); ``zstd-22`` over one payload. The record exactly: ``record_0322``.
- ``record_0322`` / ``record_0414`` — the records' own ``mixed_quantize_int6`` / ``gptq_mixed_quantize``
  tensor by tensor (see :func:`record_0322_policy`, :func:`record_0414_policy`), including their
  "≤ 65,536 elements → fp16" rule (``export.keep_float_max_numel``); containers as the other v1 schemes
  (the records pickle with ``torch.save``; the tensor bytes are the same, the framing differs).
- ``gptq6_emb7_brotli`` — after [04-14] (PR #1626; ``record_0414`` is its exact export), CATALOGUE §3 "Q": full-Hessian GPTQ with SDClip, int6
  matrices (k: MLP 12, attention 13), int7 tied embedding (k 15, Hessian of the final-norm output);
  all other floats fp16; byte shuffle (stride 2) + ``brotli-11`` over one payload.
- ``budget`` — :func:`pgolf.export.solve.search_budget`: bits / clip / GPTQ / LQER per tensor group
  chosen to fill ``export.budget_bytes`` − code bytes, per-group streams (container v2).

Unlike the records (whose matrices are all > 65,536 elements), every 2-D attention/MLP/embedding
matrix is quantized by the last three schemes whatever its size, so narrow models are comparable.

**Hessians** (GPTQ, and the search's error proxy) come from :func:`calibration_hessians`: the run's
``hessians.safetensors`` when the trainer collected them on training tokens inside its budget
(``train.calib_reserve_seconds``), else sequences the model generates itself ([03-25]); never
validation tokens. The artifact's ``meta.hessian_source`` records which.

Per-tensor share of the compressed bytes (``TensorRow.compressed_bytes``): for one-payload schemes,
with ``share_estimate="standalone"`` (default) each tensor's packed parts are compressed alone with the
scheme's codec, giving c_i, and the real compressed payload C is split in proportion to c_i
(largest-remainder rounding, so the rows sum to C exactly); ``"proportional"`` splits C in proportion
to the packed bytes. For per-group streams each stream's compressed bytes are split over its parts
in proportion to their packed bytes. The container header is reported separately
(``ByteReport.overhead_bytes``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import pgolf
from pgolf import fileio
from pgolf.artifact import codecs
from pgolf.artifact.budget import TensorRow, code_bytes
from pgolf.artifact.format import (
    DEFAULT_MAX_RAW_BYTES,
    pack_artifact,
    parse_artifact,
    read_artifact,
    tensor_bytes,
)
from pgolf.config import ExportConfig, RunConfig
from pgolf.errors import ArtifactError, ConfigError, DataError
from pgolf.export.schemes import (  # noqa: F401  (re-exported: the driver's public names)
    EXPORT_SCHEMES,
    ExportScheme,
    PolicyFn,
    get_export_scheme,
    int8_zlib_policy,
    lowbit_export_scheme,
    record_0322_policy,
    record_0414_policy,
    record_0427_policy,
)
from pgolf.model.gpt import GPT, unwrap
from pgolf.quant import HESSIANS_FILE, grid
from pgolf.quant.intgrid import QuantSpec
from pgolf.roles import RoleMap, check_roles
from pgolf.switch import needs

# GPTQ, calibration, the budget search and per-group streams are imported by the schemes that use them,
# so a bundle (pgolf.bundler) of a configuration that never reaches them leaves them out.
if TYPE_CHECKING:
    from pgolf.artifact.streams import PackReport
    from pgolf.quant.gptq import TensorSpec

LQER_0427 = {"top_k": 3, "rank": 4, "group": 64}
"""[04-27a]'s run: ``LQER_TOP_K 3``, ``LQER_RANK 4``, ``LQER_ASYM_GROUP 64`` (``train_seed42.log`` L53-58)."""
STREAM_CODECS_0427: tuple[str, ...] = ("brotli-11", "lzma-9e", "zstd-22")
"""Codecs tried per stream in place of the record's ``lrzip -z -L 9`` (ZPAQ, a subprocess, L2381-2390):
the best of brotli/lzma/zstd in process (see docs/benchmarks.md "record schemes")."""


def record_lqer_0427(state_dict: Mapping[str, Tensor], qsd: dict[str, grid.QuantTensor],
                     eligible: list[str]) -> list[str]:
    """[04-27a]'s LQER (L2268-2287): E = W − Ŵ for every GPTQ tensor, the ``top_k`` by ‖E‖_F across all
    groups get A = U_r S_r, B = V_rᵀ of the plain SVD (rank 4), stored asymmetric (A int2 one scale, B
    int4 per 64; :func:`pgolf.quant.lqer_factors.quantize_lqer_factors`) when 64 divides B's size (the record's
    symmetric fallback is not stored here; such tensors stay uncorrected). Returns the corrected names."""
    from pgolf.quant.lqer_factors import quantize_lqer_factors

    errs = {n: (state_dict[n].float() - grid.dequantize_tensor(qsd[n]).float()) for n in eligible}
    top = sorted(errs, key=lambda n: -float(errs[n].norm()))[: LQER_0427["top_k"]]
    done = []
    for n in top:
        u, sv, vh = torch.linalg.svd(errs[n], full_matrices=False)
        r = min(LQER_0427["rank"], sv.numel())
        a, b = (u[:, :r] * sv[:r]).contiguous(), vh[:r].contiguous()
        if r != LQER_0427["rank"] or b.numel() % LQER_0427["group"] or b.shape[1] % LQER_0427["group"]:
            continue
        parts = quantize_lqer_factors(a, b, LQER_0427["group"])
        qt = qsd[n]
        qsd[n] = grid.QuantTensor(grid.lqer_scheme_name(qt.scheme, r, LQER_0427["group"]), {**qt.parts, **parts},
                                  qt.shape, qt.dtype)
        done.append(n)
    return done


@dataclass(frozen=True)
class ExportResult:
    blob: bytes
    """The complete artifact file."""
    model_bytes: int
    """``len(blob)``: what counts against the cap."""
    rows: list[TensorRow]
    payload_raw_bytes: int
    """Uncompressed payload (the baseline's "int8 payload" figure, without pickle overhead)."""
    payload_compressed_bytes: int
    scheme: str
    codec: str
    header: dict[str, Any]
    hessian_source: str = "none"
    """"train", "generated" or "none" (no scheme needing Hessians, or none given)."""
    search: Any = None
    """The :class:`pgolf.export.solve.SearchResult` of the ``budget`` scheme (its choices table)."""
    pack_report: PackReport | None = None


def export_model(
    state_dict: Mapping[str, Tensor],
    export_cfg: ExportConfig,
    *,
    roles: RoleMap,
    meta: Mapping[str, Any] | None = None,
    share_estimate: str = "standalone",
    hessians: Mapping[str, Tensor] | None = None,
    hessian_source: str = "none",
    loss_fn: Callable[[Mapping[str, Tensor]], float] | None = None,
    code_bytes_: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Quantize ``state_dict`` with ``export_cfg.scheme`` and pack it into an artifact (in memory).

    ``roles`` ({name: Role}, from :func:`pgolf.model.gpt.parameter_roles` or ``model_roles(cfg)``)
    must cover exactly the state dict's tensors.

    ``hessians`` ({weight name: H}) feed GPTQ and the search (schemes that need them fall back to
    plain rounding / the Frobenius error for tensors without one); ``loss_fn`` (a state dict → loss
    on self-generated text) enables the ``budget`` scheme's loss weights and plan verification.
    ``code_bytes_`` is what ``budget`` leaves for code: the runner passes its run's
    (:func:`pgolf.artifact.budget.code_bytes` of the whole config); default, the bundle of the default
    config with this export section."""
    scheme = get_export_scheme(export_cfg.scheme)
    if share_estimate not in ("standalone", "proportional"):
        raise ConfigError(f"share_estimate must be 'standalone' or 'proportional', got {share_estimate!r}")
    state_dict = {k: v.detach().to("cpu") for k, v in state_dict.items()}
    check_roles(roles, state_dict)
    hessians = dict(hessians or {}) if scheme.needs_hessians else {}
    source = hessian_source if hessians else "none"
    full_meta = {"pgolf_version": pgolf.__version__, "export_scheme": scheme.name, "hessian_source": source,
                 **dict(meta or {})}
    if scheme.policy is None:
        return _export_budget(state_dict, roles, export_cfg, hessians, source, full_meta, loss_fn, code_bytes_, log)

    if scheme.codec == "streams":
        return _export_record_streams(scheme, state_dict, roles, export_cfg, hessians, source, full_meta)
    if scheme.policy is int8_zlib_policy:  # the baseline's own quantizer (no stats needed)
        qsd = grid.quantize_state_dict(state_dict, grid.int8_policy_for(roles, export_cfg.keep_float_max_numel))
    elif scheme.name.startswith(("ternary", "binary")):  # low-bit (lowbit_export_scheme): fixed storage, no GPTQ
        qsd = {n: grid.quantize_tensor(t, scheme.policy(n, t, roles[n], export_cfg)) for n, t in state_dict.items()}
    else:
        from pgolf.quant.gptq import ModelQuantizer

        mq = ModelQuantizer(state_dict, hessians)
        specs = {n: _without_missing_hessian(scheme.policy(n, t, roles[n], export_cfg), n, hessians)
                 for n, t in state_dict.items()}
        qsd = mq.quantize(specs).tensors
    blob, header = pack_artifact(qsd, codec=scheme.codec, meta=full_meta, scheme=scheme.name)
    if (scheme.quantizes and export_cfg.fit == "prune" and code_bytes_ is not None
            and len(blob) + code_bytes_ > export_cfg.budget_bytes):  # int8 rows have no ±1 entries to prune
        qsd, blob, header = fit_to_cap(state_dict, qsd, (blob, header), hessians, export_cfg.budget_bytes - code_bytes_,
                                       lambda q: pack_artifact(q, codec=scheme.codec, meta=full_meta, scheme=scheme.name),
                                       log or (lambda m: None))
    comp_total = header["payload"]["compressed_bytes"]

    packed = {name: b"".join(tensor_bytes(p) for p in qt.parts.values()) for name, qt in qsd.items()}
    if share_estimate == "standalone":
        weights = [len(codecs.compress(b, scheme.codec)) if b else 0 for b in packed.values()]
    else:
        weights = [len(b) for b in packed.values()]
    shares = _split(comp_total, weights)
    rows = [_row(name, state_dict[name], qt, share) for (name, qt), share in zip(qsd.items(), shares, strict=True)]
    return ExportResult(
        blob=blob,
        model_bytes=len(blob),
        rows=rows,
        payload_raw_bytes=header["payload"]["raw_bytes"],
        payload_compressed_bytes=comp_total,
        scheme=scheme.name,
        codec=scheme.codec,
        header=header,
        hessian_source=source,
    )


FIT_PACKS = 8
"""At most this many trial packs (each compresses the whole payload) in :func:`fit_to_cap`."""


@needs("scheme.quantizes and export.fit == 'prune'")
def fit_to_cap(state_dict: Mapping[str, Tensor], qsd: dict[str, grid.QuantTensor],
               packed: tuple[bytes, dict[str, Any]], hessians: Mapping[str, Tensor], target: int, pack: Callable[[dict[str, grid.QuantTensor]], tuple[bytes, dict[str, Any]]],
               log: Callable[[str], None]) -> tuple[dict[str, grid.QuantTensor], bytes, dict[str, Any]]:
    """The quantized model (``packed``: its artifact and header as already packed) with its cheapest ±1 entries
    zeroed until its artifact is at most ``target`` bytes
    (``export.fit = prune``; selective ±1 pruning, [03-25] PR #1019, :mod:`pgolf.quant.selective_prune`:
    cheapest by the Hessian-weighted error increase δ·H_jj). Bytes are measured by packing, never assumed:
    the count n is found by secant steps on the measured bytes(n) (bytes fall about linearly in n over a
    small overshoot), then doubled until it fits, within :data:`FIT_PACKS` packs; the smallest fitting n
    found is kept. If no n fits (nothing prunable, or too far over), the unpruned artifact is returned and
    the run reports it over the cap."""
    from pgolf.quant.selective_prune import apply_pruning, prune_order

    blob, header = packed  # qsd as already packed: pruning starts from its measured bytes
    order = prune_order(state_dict, qsd, hessians)
    over = len(blob) - target
    if over <= 0 or len(order) == 0:
        return qsd, blob, header
    tried: dict[int, int] = {0: len(blob)}
    best: tuple[int, dict[str, grid.QuantTensor], bytes, dict[str, Any]] | None = None
    n = min(len(order), 8 * over)  # a first guess: one byte freed per 8 entries
    for _ in range(FIT_PACKS):
        q = apply_pruning(qsd, order, n)
        b, h = pack(q)
        tried[n] = len(b)
        if len(b) <= target and (best is None or n < best[0]):
            best = (n, q, b, h)
        lo = max((k for k in tried if tried[k] > target), default=0)
        hi = min((k for k in tried if tried[k] <= target), default=None)
        if hi is not None and hi - lo <= max(1, hi // 200):  # within 0.5 % of the fewest that fit
            break
        if hi is None:  # still over: secant from the last two, at least doubling
            slope = (tried[0] - len(b)) / n if n else 0.0
            nxt = max(2 * n, int((tried[0] - target) / slope * 1.05) if slope > 0 else 2 * n)
        else:
            slope = (tried[lo] - tried[hi]) / (hi - lo) if hi > lo else 0.0
            guess = lo + int((tried[lo] - target) / slope) + 1 if slope > 0 else (lo + hi) // 2
            nxt = min(max(guess, lo + 1), hi - 1) if hi - lo > 1 else hi
        if nxt >= len(order) and n == len(order):
            break
        n = min(len(order), nxt)
    if best is None:
        log(f"export fit: {len(blob):,} model bytes stay over the {target:,} left by the code "
            f"(pruning {max(tried):,} of {len(order):,} ±1 entries was not enough)")
        return qsd, blob, header
    n, q, b, h = best
    log(f"export fit: pruned {n:,} of {len(order):,} quantized ±1 entries (selective ±1 pruning, [03-25]): "
        f"{len(blob):,} -> {len(b):,} model bytes <= {target:,} left by the code ({len(tried)} packs)")
    return q, b, h


@needs("scheme.codec == 'streams'")
def _export_record_streams(scheme: ExportScheme, state_dict: dict[str, Tensor], roles: RoleMap, cfg: ExportConfig,
                           hessians: dict[str, Tensor], source: str, meta: dict[str, Any]) -> ExportResult:
    """[04-27a]: quantize per policy, LQER on the top 3, then its per-group streams
    (``_serialize_pergroup``, L2443-2504): int8 value parts grouped by role, hot groups (tok_emb, c_q,
    mlp.fc) rows L1-similarity-sorted with their permutations stored, transposed; the rest (scales,
    passthrough floats, LQER factors, gate rows) in side streams (:func:`pgolf.artifact.streams.role_grouping`);
    each stream's codec from :data:`STREAM_CODECS_0427` (the record: lrzip-ZPAQ, brotli-11 on the rest)."""
    from pgolf.artifact.streams import HOT_GROUPS, pack, role_grouping
    from pgolf.quant.gptq import ModelQuantizer

    assert scheme.policy is not None
    specs = {n: _without_missing_hessian(scheme.policy(n, t, roles[n], cfg), n, hessians) for n, t in state_dict.items()}
    qsd = dict(ModelQuantizer(state_dict, hessians).quantize(specs).tensors)
    gptq = [n for n, sp in specs.items() if isinstance(sp, QuantSpec) and sp.clip == "sdclip"]
    meta = {**meta, "lqer": record_lqer_0427(state_dict, qsd, gptq)}
    blob, report = pack(qsd, grouping=role_grouping(roles), candidates=STREAM_CODECS_0427, transforms=("T", "perm+T"),
                        reorder=HOT_GROUPS, meta=meta, scheme=scheme.name)
    return ExportResult(blob=blob, model_bytes=len(blob), rows=stream_rows(state_dict, qsd, report),
                        payload_raw_bytes=report.raw_bytes, payload_compressed_bytes=report.compressed_bytes,
                        scheme=scheme.name, codec="streams", header=parse_artifact(blob, source=scheme.name)[1],
                        hessian_source=source, pack_report=report)


def _without_missing_hessian(spec: TensorSpec, name: str, hessians: Mapping[str, Tensor]) -> TensorSpec:
    """GPTQ needs the tensor's Hessian; without one (e.g. an untied input embedding) plain rounding."""
    if isinstance(spec, QuantSpec) and spec.needs_hessian and name not in hessians:
        return replace(spec, gptq=False, clip="sdclip" if spec.clip == "sdclip_hessian" else spec.clip)
    return spec


def _row(name: str, t: Tensor, qt: grid.QuantTensor, share: int) -> TensorRow:
    return TensorRow(name=name, shape=qt.shape, scheme=qt.scheme, raw_bytes=t.numel() * t.element_size(),
                     quant_bytes=qt.nbytes, compressed_bytes=share)


@needs("scheme.name == 'budget'")
def _export_budget(
    state_dict: dict[str, Tensor],
    roles: RoleMap,
    cfg: ExportConfig,
    hessians: dict[str, Tensor],
    source: str,
    meta: dict[str, Any],
    loss_fn: Callable[[Mapping[str, Tensor]], float] | None,
    code_bytes_: int | None,
    log: Callable[[str], None] | None,
) -> ExportResult:
    from pgolf.export.search import PackSettings, SearchSpace
    from pgolf.export.solve import search_budget

    code = code_bytes(RunConfig(export=cfg)) if code_bytes_ is None else code_bytes_
    space = SearchSpace.from_config(cfg)
    res = search_budget(
        state_dict, roles, hessians, cfg.budget_bytes - code, space=space, settings=PackSettings(), loss_fn=loss_fn,
        weights=cfg.search_weights, verify=cfg.verify_plans, meta=meta, scheme="budget", log=log,
    )
    rows = stream_rows(state_dict, res.tensors, res.report)
    return ExportResult(
        blob=res.blob,
        model_bytes=len(res.blob),
        rows=rows,
        payload_raw_bytes=res.report.raw_bytes,
        payload_compressed_bytes=res.report.compressed_bytes,
        scheme="budget",
        codec="streams",
        header=parse_artifact(res.blob, source="budget artifact")[1],
        hessian_source=source,
        search=res,
        pack_report=res.report,
    )


def stream_rows(state_dict: Mapping[str, Tensor], tensors: Mapping[str, grid.QuantTensor],
                report: PackReport) -> list[TensorRow]:
    """Per-tensor rows of a per-group-stream artifact: each stream's compressed bytes split over its
    parts in proportion to their packed bytes (rows sum to the compressed payload exactly)."""
    share = {name: 0 for name in tensors}
    for st in report.streams:
        names = [e.rsplit("[", 1)[0] for e in st.tensors]
        roles = [e.rsplit("[", 1)[1][:-1] for e in st.tensors]
        w = [tensors[n].parts[r].numel() * tensors[n].parts[r].element_size() for n, r in zip(names, roles, strict=True)]
        for n, b in zip(names, _split(st.compressed_bytes, w), strict=True):
            share[n] += b
    return [_row(n, state_dict[n], qt, share[n]) for n, qt in tensors.items()]


def _split(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder; ties to
    the earlier index). All-zero weights: everything to the first entry."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum == 0:
        return [total] + [0] * (len(weights) - 1)
    base = [total * w // wsum for w in weights]
    rem = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
    for i in order[:rem]:
        base[i] += 1
    return base


def write_export(path: str | os.PathLike[str], result: ExportResult) -> int:
    """Write the artifact atomically; return its size in bytes."""
    fileio.write_bytes(path, result.blob)
    return len(result.blob)


def load_model_state(
    path: str | os.PathLike[str], *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read, verify and dequantize an artifact: ``(state_dict, header)``, each tensor with the shape and
    dtype it had at export, ready for ``model.load_state_dict``. Problems → ArtifactError."""
    tensors, header = read_artifact(path, max_raw_bytes=max_raw_bytes)
    out: dict[str, Tensor] = {}
    for name, qt in tensors.items():
        try:
            out[name] = grid.dequantize_tensor(qt)
        except ValueError as e:
            raise ArtifactError(f"{path}: tensor {name}: {e}") from None
    return out, header


# --------------------------------------------------------------------------- Hessians and loss checks


def calibration_hessians(
    model: torch.nn.Module,
    export_cfg: ExportConfig,
    *,
    seq_len: int,
    run_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Tensor], str, dict[str, Any]]:
    """``(hessians, source, info)`` per ``export.calib_source``: the run's saved training-token Hessians
    (``train``; ``auto`` when present), else self-generated ones ([03-25]; collective under torchrun)."""
    from pgolf.quant.calib import calibrate_from_generated, load_hessians

    saved = Path(run_dir) / HESSIANS_FILE if run_dir is not None else None
    if export_cfg.calib_source in ("auto", "train") and saved is not None and saved.exists():
        h, info = load_hessians(saved)
        return h, "train", info
    if export_cfg.calib_source == "train":
        raise DataError(f"{saved or 'run directory'}: no training-token Hessians (set train.calib_reserve_seconds > 0 "
                        "when training, or export.calib_source=generated)")
    n_len = export_cfg.calib_seq_len or seq_len
    cal = calibrate_from_generated(model, n_seqs=export_cfg.calib_seqs, seq_len=n_len,
                                   temperature=export_cfg.calib_temperature, seed=export_cfg.calib_seed)
    info = {"source": "generated", "tokens": cal.tokens, "seqs": export_cfg.calib_seqs, "seq_len": n_len,
            "seconds": round(cal.seconds, 3)}
    if log:
        log(f"calibration: {cal.tokens} self-generated tokens ({export_cfg.calib_seqs} × {n_len}) in {cal.seconds:.1f}s")
    return cal.hessians, "generated", info


def generated_loss_fn(
    model: torch.nn.Module, export_cfg: ExportConfig, *, seq_len: int, batch_size: int = 8
) -> Callable[[Mapping[str, Tensor]], float]:
    """A state dict → mean next-token loss (nats, fp32) on ``export.verify_seqs`` sequences the model
    generates at temperature 1 (seed ``calib_seed + 1``, not the calibration text; never validation).
    At temperature 1 the expected gradient of the log-likelihood is zero, so loss differences are
    second order (the Fisher form), see :mod:`pgolf.export.search`."""
    from pgolf.quant.calib import generate_tokens

    net = unwrap(model)
    n_len = export_cfg.calib_seq_len or seq_len
    toks = generate_tokens(net, n_seqs=export_cfg.verify_seqs, seq_len=n_len + 1, temperature=1.0,
                           seed=export_cfg.calib_seed + 1)
    dev = next(net.parameters()).device
    probe = GPT(net.cfg).to(dev).eval()

    @torch.no_grad()
    def loss(sd: Mapping[str, Tensor]) -> float:
        probe.load_state_dict({k: v.to(dev) for k, v in sd.items()}, strict=True)
        total, count = 0.0, 0
        for b0 in range(0, toks.shape[0], batch_size):
            x = toks[b0 : b0 + batch_size].to(dev)
            nll = probe(x[:, :-1], x[:, 1:], reduction="sum")
            total += float(nll.double())
            count += x[:, 1:].numel()
        return total / max(count, 1)

    return loss
