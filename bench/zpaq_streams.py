"""ZPAQ (in process) against brotli / zstd / lzma on the record_0427 scheme's integer streams of a checkpoint.

[04-27a] compressed its hot groups with lrzip-ZPAQ, an external binary the challenge machine may lack.
This measures the one in-process ZPAQ binding on PyPI (``zpaq``; optional, not a pgolf dependency) on the
streams ``record_0427`` would pack: per role group, the int6/int7/int8 values of every tensor the scheme
quantizes (plain rounding on its grid, rows as stored; no transform or row reordering), each compressed
whole by every codec, exact bytes. A group's winner is what a per-stream codec choice would keep.

    python bench/zpaq_streams.py RUN_DIR [--threads 1]
"""

from __future__ import annotations

import argparse
import lzma
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="zpaq worker threads (1: one block, its best ratio)")
    args = ap.parse_args(argv)
    import brotli
    import zstandard

    try:
        import zpaq
    except ImportError:
        print("zpaq is not installed (pip install zpaq): nothing to compare", file=sys.stderr)
        return 2
    import torch

    from pgolf.config import load_config
    from pgolf.export.driver import record_0427_policy
    from pgolf.model.gpt import GPT, parameter_roles
    from pgolf.quant.grid import quantize_tensor
    from pgolf.quant.intgrid import QuantSpec
    from pgolf.train import checkpoint as ckpt_mod

    cfg = load_config(str(args.run_dir / "config.json"))
    model = GPT(cfg.model)
    model.load_state_dict(ckpt_mod.load_checkpoint(args.run_dir).model_state)
    roles = parameter_roles(model)
    groups: dict[str, bytearray] = {}
    for name, t in model.state_dict().items():
        spec = record_0427_policy(name, t, roles[name], cfg.export)
        if not isinstance(spec, QuantSpec):
            continue
        q = quantize_tensor(t.float(), spec.scheme).parts["q"]
        groups.setdefault(roles[name].value, bytearray()).extend(q.to(torch.int8).numpy().tobytes())
    codecs = {
        "brotli-11": lambda b: brotli.compress(b, quality=11, lgwin=24),
        "zstd-22": lambda b: zstandard.ZstdCompressor(level=22).compress(b),
        "lzma-9e": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
        "zpaq-5": lambda b: zpaq.compress(b, level=5, threads=args.threads),
    }
    print(f"checkpoint {args.run_dir} ({cfg.name}); record_0427's quantized groups, exact compressed bytes\n")
    print("| group | raw bytes | " + " | ".join(codecs) + " | best |")
    print("|---|---:|" + "---:|" * len(codecs) + "---|")
    totals = dict.fromkeys(codecs, 0)
    seconds = dict.fromkeys(codecs, 0.0)
    for g, raw in sorted(groups.items()):
        data = bytes(raw)
        sizes = {}
        for c, fn in codecs.items():
            t0 = time.perf_counter()
            out = fn(data)
            seconds[c] += time.perf_counter() - t0
            if c == "zpaq-5":
                assert zpaq.decompress(out) == data, "zpaq did not round-trip"
            sizes[c] = len(out)
            totals[c] += len(out)
        best = min(sizes, key=sizes.get)
        print(f"| {g} | {len(data):,} | " + " | ".join(f"{sizes[c]:,}" for c in codecs) + f" | {best} |")
    print("| **total** | | " + " | ".join(f"{totals[c]:,}" for c in codecs) + " | |")
    print("| seconds | | " + " | ".join(f"{seconds[c]:.2f}" for c in codecs) + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
