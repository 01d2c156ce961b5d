"""Bytes per weight of ternary / binary codes under the artifact layouts, after the record's lzma-9.

The ternary record [03-24] (PR #640) packed 5 trits per byte before LZMA-9 ("39 % reduction over
int8+zlib") and also tried a zero-mask + sign-bitmap layout ("nearly identical"). This measures, on
Gaussian weights quantized with pgolf.quant.lowbit (absmean groups; zero fraction ≈ 0.31 for a Gaussian)
and on i.i.d. codes at the record's logged zero fractions (17–34 %):

    int8   one code per byte (the int-k grids' container), then lzma-9
    base3  pgolf.quant.lowbit.pack_trits (5 per byte), then lzma-9
    mask   np.packbits(q ≠ 0) + np.packbits(q[q ≠ 0] > 0) (the record's bitmask layout), then lzma-9
    bits   (binary) pgolf.quant.lowbit.pack_bits, then lzma-9

and prints bits per weight (compressed bytes · 8 / weights; scales not included) and the entropy bound.

    python bench/lowbit_pack.py [--weights 4000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import lzma
import math
import time

import numpy as np
import torch

from pgolf.quant.lowbit import lowbit_quantize, pack_bits, pack_trits


def lz(b: bytes) -> int:
    return len(lzma.compress(b, format=lzma.FORMAT_XZ, preset=9))


def ternary_rows(q: torch.Tensor) -> dict[str, float]:
    n = q.numel()
    f = q.reshape(-1).numpy().astype(np.int8)
    nz = f != 0
    layouts = {
        "int8": f.tobytes(),
        "base3": pack_trits(q).numpy().tobytes(),
        "mask": np.packbits(nz).tobytes() + np.packbits(f[nz] > 0).tobytes(),
    }
    out = {k: lz(v) * 8 / n for k, v in layouts.items()}
    p = np.bincount(f + 1, minlength=3) / n
    out["entropy"] = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    out["zero_frac"] = float(1 - nz.mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=int, default=4_000_000, help="weights per measurement")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    cols = 768
    rows = max(1, args.weights // cols)
    t0 = time.perf_counter()
    print(f"{rows}×{cols} weights per row of the table; bits per weight after lzma-9 (codes only)\n")
    print(f"{'codes':38s} {'zero %':>7s} {'int8':>7s} {'base3':>7s} {'mask':>7s} {'H(q)':>7s}")
    w = torch.randn(rows, cols, generator=g) * 0.02
    q, _ = lowbit_quantize(w, "ternary", 128)
    r = ternary_rows(q)
    print(f"{'gaussian W, absmean groups of 128':38s} {100 * r['zero_frac']:7.1f} {r['int8']:7.3f} {r['base3']:7.3f} "
          f"{r['mask']:7.3f} {r['entropy']:7.3f}")
    for z in (0.17, 0.25, 0.335):
        u = torch.rand(rows, cols, generator=g)
        s = torch.where(torch.rand(rows, cols, generator=g) < 0.5, -1, 1)
        qz = torch.where(u < z, 0, s).to(torch.int8)
        r = ternary_rows(qz)
        print(f"{f'i.i.d. codes, zero fraction {z}':38s} {100 * r['zero_frac']:7.1f} {r['int8']:7.3f} "
              f"{r['base3']:7.3f} {r['mask']:7.3f} {r['entropy']:7.3f}")
    qb, _ = lowbit_quantize(w, "binary", 128)
    fb = qb.reshape(-1).numpy().astype(np.int8)
    print(f"\nbinary (gaussian W): int8 {lz(fb.tobytes()) * 8 / fb.size:.3f}, "
          f"1-bit {lz(pack_bits(qb).numpy().tobytes()) * 8 / fb.size:.3f} bits per weight (bound 1.000); "
          f"log2(3) = {math.log2(3):.3f}, base-3 packing alone {8 / 5:.3f}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
