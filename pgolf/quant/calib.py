"""GPTQ calibration: the input Hessian H = E[x xᵀ] of every linear, from legal sources only.

Sources (CATALOGUE §2.5 "Calibration data"; code written here):

- **training tokens inside the training budget** ([03-29] PR #1060 reserves 14 s of the 600 s;
  [04-14] 4 s / 16 batches; [04-23]+ 0.5 s): :func:`calibrate_from_train` reads batches from the
  *training* loader until ``reserve_seconds`` would be exceeded (it stops before a batch that its
  slowest batch so far says would not fit) and reports the batches used. The caller runs it inside
  the training wallclock: [03-25] notes that calibrating on training data after the 600 s was ruled
  illegal.
- **self-generated sequences** ([03-25] PR #1019): :func:`generate_tokens` samples ``n_seqs`` ×
  ``seq_len`` tokens from the trained model (temperature 0.8, fixed seed, uniformly random first
  token; full recompute per step, no KV cache), and :func:`calibrate_from_generated` collects on them.
  No data is read at all.

**Never validation tokens.** Calibrating on the validation set fits the artifact to the text it is
scored on. So these functions take no token arrays: a loader object with ``next_batch`` (refused if it
is a tensor/array, a ``ValData``-like object with ``raw_bytes``, or names ``*_val_*`` files or a val
split), or nothing (self-generation). :class:`HessianCollector` is the mechanism underneath; whoever
drives it directly owns the choice of data.

Maths: for a linear y = W x with W [out, in], H = (1/N) Σ_n x_n x_nᵀ [in, in] over the N token
positions that reach it (summed in fp32 or fp64, then divided; across ranks the sums and counts are
all-reduced first, so every rank gets the same H). The tied embedding E [V, d] acts as the LM head
on the output of the final RMSNorm, so its H comes from ``final_norm``'s output ([04-05]); so does an
untied ``lm_head``'s (GPT applies the head weight functionally, not by calling the module). Once
every hooked input has been captured the forward pass is cut short (for this GPT the logits are never
computed). Hessians are keyed by weight name: ``blocks.{i}.attn.c_q.weight``, ``tok_emb.weight``…
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pgolf import dist, fileio
from pgolf.errors import ConfigError, DataError
from pgolf.model.gpt import parameter_roles, unwrap
from pgolf.quant import HESSIANS_FILE  # noqa: F401  (re-exported; the file name's home is pgolf.quant)
from pgolf.quant.gptq import full_fp32_matmul

NEEDED_WHEN = "train.calib_reserve_seconds > 0 or scheme.needs_hessians"


class _StopForward(Exception):
    """Raised by the head hook: nothing after the final norm is needed."""


@dataclass(frozen=True)
class Calibration:
    hessians: dict[str, Tensor]
    """Weight name → H [in, in], fp32 on the CPU (empty when no batch was used)."""
    tokens: int
    """Token positions averaged into each H (all ranks)."""
    batches: int
    """Batches (or generated sequences' batches) used on this rank."""
    seconds: float
    """Wallclock spent (this rank), generation included."""
    source: str
    """"train" or "generated"."""


def _unwrap(model: nn.Module) -> nn.Module:
    return unwrap(model)


class HessianCollector:
    """Context manager: hooks accumulating Σ xxᵀ per linear input (forward pre-hooks) and, for a tied
    head, per final-norm output. ``run(idx)`` forwards one batch and stops it as soon as every target
    has been seen (for this GPT: right after the final norm); :meth:`hessians` returns the means."""

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None, accum_dtype: torch.dtype = torch.float32):
        self.model = _unwrap(model)
        self.accum_dtype = accum_dtype
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._targets: list[tuple[nn.Module, str, bool]] = []  # (module, weight name, output-side)
        want = None if names is None else set(names)
        # What to hook comes from the declared roles (pgolf.roles): a weight whose role takes its
        # Hessian from the layer input gets a pre-hook on the linear that owns it; the LM head (the
        # untied head, else the tied embedding) gets the output of the final norm.
        roles = parameter_roles(self.model)
        modules = dict(self.model.named_modules())
        final_norm = getattr(self.model, "final_norm", None)
        head = getattr(self.model, "head_weight_name", "")
        for wname, role in roles.items():
            if role.hessian == "input":
                owner = modules.get(wname.rsplit(".", 1)[0]) if "." in wname else None
                if isinstance(owner, nn.Linear) and wname.endswith(".weight") and wname != head:
                    self._add(owner, wname, owner.in_features, False, want)
            elif role.hessian == "head" and wname == head and final_norm is not None:
                self._add(final_norm, wname, int(self.model.get_parameter(wname).shape[1]), True, want)
        if want is not None and want - set(self._sums):
            raise ConfigError(f"no hook point for {', '.join(sorted(want - set(self._sums)))}")
        self._handles: list = []
        self._seen: set[str] = set()
        self._in_run = False

    def _add(self, mod: nn.Module, wname: str, dim: int, out_side: bool, want: set[str] | None) -> None:
        if want is not None and wname not in want:
            return
        dev = next(self.model.parameters()).device
        self._sums[wname] = torch.zeros(dim, dim, dtype=self.accum_dtype, device=dev)
        self._counts[wname] = 0
        self._targets.append((mod, wname, out_side))

    @property
    def names(self) -> list[str]:
        return list(self._sums)

    def _capture(self, wname: str, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(self.accum_dtype)
        with full_fp32_matmul():
            self._sums[wname].addmm_(x.T, x)
        self._counts[wname] += x.shape[0]
        self._seen.add(wname)
        if self._in_run and len(self._seen) == len(self._sums):
            raise _StopForward  # nothing later in the forward is needed

    def __enter__(self) -> HessianCollector:
        for mod, wname, out_side in self._targets:
            if out_side:
                h = mod.register_forward_hook(lambda m, i, o, n=wname: self._capture(n, o))
            else:
                h = mod.register_forward_pre_hook(lambda m, i, n=wname: self._capture(n, i[0]))
            self._handles.append(h)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.no_grad()
    def run(self, idx: Tensor, autocast_dtype: torch.dtype | None = None) -> None:
        """Forward ``idx`` [B, T] (cut short after the head input is captured)."""
        dev = next(self.model.parameters()).device
        idx = idx.to(dev)
        was_training = self.model.training
        self.model.eval()
        self._seen, self._in_run = set(), True
        try:
            with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                self.model(idx)
        except _StopForward:
            pass
        finally:
            self._in_run = False
            self.model.train(was_training)

    def hessians(self) -> tuple[dict[str, Tensor], int]:
        """``({name: H}, tokens)``: sums and counts all-reduced over ranks, H = sum / count (fp32, CPU)."""
        names = sorted(self._sums)
        counts = torch.tensor([self._counts[n] for n in names], dtype=torch.float64, device=self._device())
        dist.all_reduce_(counts)
        out: dict[str, Tensor] = {}
        for i, n in enumerate(names):
            s = dist.all_reduce_(self._sums[n].clone())
            if counts[i] > 0:
                out[n] = (s.double() / counts[i]).float().cpu()
        tokens = int(counts.max()) if len(names) else 0
        return {n: out[n] for n in self._sums if n in out}, tokens

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


# --------------------------------------------------------------------------- sources

_VAL_FILE = re.compile(r"(^|[_\-.])val([_\-.]|$)", re.IGNORECASE)


def _refuse_validation(source: object) -> None:
    """Raise ConfigError unless ``source`` looks like a training loader (module docstring)."""
    what = type(source).__name__
    if isinstance(source, (Tensor, np.ndarray, bytes, bytearray, list, tuple, dict)) or hasattr(source, "raw_bytes"):
        raise ConfigError(f"calibration takes a training-token loader, not {what} (never validation tokens)")
    if not callable(getattr(source, "next_batch", None)):
        raise ConfigError(f"calibration source {what} has no next_batch(); pass the training loader")
    if str(getattr(source, "split", "train")).lower() in ("val", "valid", "validation"):
        raise ConfigError(f"calibration source {what} is a validation loader; calibrate on training tokens")
    for value in vars(source).values() if hasattr(source, "__dict__") else ():
        items = value if isinstance(value, (list, tuple)) else [value]
        for p in items:
            if isinstance(p, (str, os.PathLike)) and _VAL_FILE.search(Path(p).name):
                raise ConfigError(f"calibration loader reads {Path(p).name}, a validation file; use training shards")


def _sync(model: nn.Module) -> None:
    dev = next(_unwrap(model).parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def calibrate_from_train(
    model: nn.Module,
    loader: object,
    *,
    batch_tokens: int,
    seq_len: int,
    reserve_seconds: float,
    grad_accum: int = 1,
    max_batches: int = 0,
    autocast_dtype: torch.dtype | None = None,
    accum_dtype: torch.dtype = torch.float32,
    names: Iterable[str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Hessians from training batches ``loader.next_batch(batch_tokens, seq_len, grad_accum) -> (x, y)``
    within ``reserve_seconds`` (and at most ``max_batches`` if > 0). A batch is started only if the
    time used plus the slowest batch so far fits the reserve."""
    _refuse_validation(loader)
    start = clock()
    slowest, batches = 0.0, 0
    with HessianCollector(model, names, accum_dtype) as hc:
        while max_batches <= 0 or batches < max_batches:
            t0 = clock()
            if reserve_seconds <= 0 or (t0 - start) + slowest > reserve_seconds:
                break
            x, _ = loader.next_batch(batch_tokens, seq_len, grad_accum)
            hc.run(x, autocast_dtype)
            _sync(model)
            slowest = max(slowest, clock() - t0)
            batches += 1
    hessians, tokens = hc.hessians()
    return Calibration(hessians, tokens, batches, clock() - start, "train")


@torch.no_grad()
def generate_tokens(
    model: nn.Module,
    *,
    n_seqs: int,
    seq_len: int,
    temperature: float = 0.8,
    seed: int = 1337,
    batch_size: int = 8,
    vocab_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """``n_seqs`` sequences of ``seq_len`` tokens [n_seqs, seq_len] int64 (CPU) sampled from the model:
    first token uniform in [0, V), then softmax(logits / temperature) (temperature 0: argmax), with a
    generator seeded by ``seed`` on the model's device."""
    net = _unwrap(model)
    dev = next(net.parameters()).device
    vocab = int(vocab_size or net.cfg.vocab_size)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    was_training = net.training
    net.eval()
    out = []
    try:
        for b0 in range(0, n_seqs, batch_size):
            bs = min(batch_size, n_seqs - b0)
            toks = torch.randint(0, vocab, (bs, 1), device=dev, generator=gen)
            for _ in range(seq_len - 1):
                with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                    logits = net(toks)[:, -1, :vocab].float()  # [bs, V]
                if temperature <= 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    nxt = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=gen)
                toks = torch.cat([toks, nxt], dim=1)
            out.append(toks.cpu())
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, seq_len, dtype=torch.int64)


def calibrate_from_generated(
    model: nn.Module,
    *,
    n_seqs: int = 64,
    seq_len: int = 2048,
    temperature: float = 0.8,
    seed: int = 1337,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    accum_dtype: torch.dtype = torch.float32,
    names: Iterable[str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Hessians from self-generated sequences ([03-25]: 64 × 2048, temperature 0.8). Under torchrun
    each rank generates its share of ``n_seqs`` with seed ``seed + rank``; the Hessians are all-reduced."""
    start = clock()
    rank, world = dist.rank(), dist.world_size()
    share = n_seqs // world + (1 if rank < n_seqs % world else 0)
    toks = generate_tokens(
        model, n_seqs=share, seq_len=seq_len, temperature=temperature, seed=seed + rank,
        batch_size=batch_size, autocast_dtype=autocast_dtype,
    )
    batches = 0
    with HessianCollector(model, names, accum_dtype) as hc:
        for b0 in range(0, toks.shape[0], batch_size):
            hc.run(toks[b0 : b0 + batch_size], autocast_dtype)
            batches += 1
    hessians, tokens = hc.hessians()
    return Calibration(hessians, tokens, batches, clock() - start, "generated")


# --------------------------------------------------------------------------- Hessian files (name: pgolf.quant.HESSIANS_FILE)


def save_hessians(path: str | os.PathLike[str], hessians: Mapping[str, Tensor], info: Mapping[str, Any]) -> None:
    """Write Hessians (fp32, CPU) and a JSON ``info`` (source, tokens, seconds) as one safetensors file."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in hessians.items()}
    with fileio.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"pgolf": json.dumps(dict(info))})


def load_hessians(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Inverse of :func:`save_hessians`; DataError (one line) if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("pgolf", "{}"))
        return load_file(str(path)), info
    except (OSError, SafetensorError, ValueError) as e:
        raise DataError(f"{path}: not a readable Hessians file ({type(e).__name__})") from None
