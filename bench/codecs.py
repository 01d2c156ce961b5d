"""Artifact codecs on int6-like quantized weights: one zlib-9 stream vs per-group streams.

What is measured: the bytes (and seconds) of packing one synthetic quantized state dict, shaped like
a small GPT (tied embedding, per-layer attention c_q/c_k/c_v/proj and MLP fc/proj), as

1. the baseline layout: one stream, zlib-9 (container v1, ``pgolf.artifact.format.build_artifact``);
2. one stream with each single codec (v1), incl. byte-shuffled brotli-11 ([03-31]/[04-01], PR #1089);
3. per-group streams (container v2, :func:`pgolf.artifact.streams.pack`), with the fast codec list
   and with the full one, with and without transforms (transpose, greedy L1 row reordering [04-27a]).

Synthetic weights (no trained checkpoint needed, deterministic from ``--seed``): per matrix,
column scales ``b_j = 3·exp(0.5·z_j)`` (some input channels wider than others), ``r/8`` prototype rows
of ``Laplace(0, b_j)``; each row is a prototype with a fraction ``--noise`` of its entries redrawn,
rows in random order; values rounded and clipped to [−31, 31] (int6 in int8 containers, CATALOGUE §2.5),
fp16 per-row scales, fp32 control vectors. Real trained weights have less row redundancy than this:
the numbers show what each tool can exploit, not the gain on a real checkpoint.

Usage (from the repository root)::

    python bench/codecs.py                       # d=256, 4 layers, vocab 1024 (~2.6 MB raw)
    python bench/codecs.py --d 512 --layers 11 --vocab 8192 --mlp 4   # record-sized, minutes
    python bench/codecs.py --noise 1.0           # no shared row structure (i.i.d. Laplace)
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import torch

from pgolf.artifact import codecs, streams
from pgolf.artifact.format import build_artifact
from pgolf.artifact.streams import format_report
from pgolf.config import ModelConfig
from pgolf.model.gpt import model_roles
from pgolf.quant.grid import QuantTensor


def int6_matrix(rows: int, cols: int, g: torch.Generator, noise: float) -> torch.Tensor:
    """int8 [rows, cols] in [−31, 31] with column structure and clustered rows (module docstring)."""
    b = 3.0 * torch.exp(0.5 * torch.randn(cols, generator=g))
    lap = lambda n: -b * torch.sign(u := torch.rand(n, cols, generator=g) - 0.5) * torch.log1p(-2 * u.abs())
    protos = lap(max(rows // 8, 1))
    w = protos[torch.randint(0, protos.shape[0], (rows,), generator=g)]
    redraw = torch.rand(rows, cols, generator=g) < noise
    w = torch.where(redraw, lap(rows), w)
    return w.round().clamp(-31, 31).to(torch.int8)[torch.randperm(rows, generator=g)]


def fake_state(d: int, layers: int, vocab: int, mlp: int, noise: float, seed: int) -> dict[str, QuantTensor | torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def qt(r: int, c: int) -> QuantTensor:
        scale = (0.002 + 0.01 * torch.rand(r, generator=g)).half()
        return QuantTensor("int6_row", {"q": int6_matrix(r, c, g, noise), "scale": scale}, (r, c), torch.bfloat16)

    sd: dict[str, QuantTensor | torch.Tensor] = {"tok_emb.weight": qt(vocab, d)}
    kv = d // 2
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "attn.c_q.weight"] = qt(d, d)
        sd[p + "attn.c_k.weight"] = qt(kv, d)
        sd[p + "attn.c_v.weight"] = qt(kv, d)
        sd[p + "attn.proj.weight"] = qt(d, d)
        sd[p + "mlp.fc.weight"] = qt(mlp * d, d)
        sd[p + "mlp.proj.weight"] = qt(d, mlp * d)
        sd[p + "attn_scale"] = torch.rand(d, generator=g)
        sd[p + "mlp_scale"] = torch.rand(d, generator=g)
    return sd


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--mlp", type=int, default=2)
    ap.add_argument("--noise", type=float, default=0.3, help="fraction of each row redrawn from its prototype")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-full", action="store_true", help="skip the slow full-candidate per-group runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sd = fake_state(args.d, args.layers, args.vocab, args.mlp, args.noise, args.seed)
    # the roles of these names: the GPT of the same shape (kv width d/2 = 2 query heads per KV head)
    roles = model_roles(ModelConfig(vocab_size=args.vocab, num_layers=args.layers, model_dim=args.d,
                                    num_heads=max(args.d // 64, 2), num_kv_heads=max(args.d // 128, 1), mlp_mult=args.mlp))
    pack = functools.partial(streams.pack, grouping=streams.role_grouping(roles))
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    print(f"# python {sys.version.split()[0]}, torch {torch.__version__}, {cpu}, {os.cpu_count()} cores, 1 thread")
    print(f"# {' '.join(sys.argv)}")

    rows: list[tuple[str, int, float]] = []

    def run(label: str, fn) -> object:
        t = time.perf_counter()
        out = fn()
        n = len(out[0]) if isinstance(out, tuple) else len(out)
        rows.append((label, n, time.perf_counter() - t))
        return out

    for c in ("zlib-9", "zstd-22", "lzma-9e", "brotli-11", "shuffle2+brotli-11"):
        run(f"one stream, {c} (v1)", lambda c=c: build_artifact(sd, codec=c))
    run("per-group, fast codecs, no transforms", lambda: pack(sd, candidates=codecs.FAST_CANDIDATES, transforms=("none",)))
    run("per-group, fast codecs, transforms", lambda: pack(sd, candidates=codecs.FAST_CANDIDATES))
    reports = {}
    if not args.skip_full:
        run("per-group, all codecs, no transforms", lambda: pack(sd, transforms=("none",)))
        reports["proxy"] = run("per-group, all codecs, transforms ranked by zstd-22", lambda: pack(sd, proxy="zstd-22"))[1]
        reports["full"] = run("per-group, all codecs, all transforms", lambda: pack(sd))[1]

    base = rows[0][1]
    w = max(len(r[0]) for r in rows)
    print(f"\n{'layout'.ljust(w)}  {'bytes':>11}  {'vs zlib-9':>9}  {'seconds':>8}")
    for label, n, s in rows:
        print(f"{label.ljust(w)}  {n:>11,}  {100 * (n - base) / base:>+8.2f}%  {s:>8.2f}")
    for name, rep in reports.items():
        print(f"\nper-group streams ({name}):")
        print(format_report(rep))


if __name__ == "__main__":
    main()
