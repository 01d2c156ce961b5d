"""bf16 vs fp32 training throughput of presets on this machine, side by side (train.amp_dtype=auto's claim).

For each preset and precision: build the model as the trainer does (compiled when the preset compiles),
run a few warm-up steps, then time ``--steps`` real optimizer steps on random tokens. Prints one table row
per (preset, precision) with ms/step and tokens/s, and what ``auto`` picks here and why.

    python bench/precision.py                     # demo and cpu presets
    python bench/precision.py --presets cpu --steps 30
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pgolf.model.gpt import GPT  # noqa: E402
from pgolf.optim import build_optimizers  # noqa: E402
from pgolf.precision import autocast, cpu_model, resolve_amp  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402


def time_steps(preset: str, amp: str, steps: int, warmup: int) -> tuple[float, int]:
    cfg = get_preset(preset)
    t = cfg.train
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opts = build_optimizers(model, cfg.optim)
    fwd = torch.compile(model, dynamic=False) if t.compile else model
    micro = t.batch_tokens // max(t.grad_accum, 1)
    B = micro // t.seq_len
    g = torch.Generator().manual_seed(1)

    def step() -> None:
        for _ in range(max(t.grad_accum, 1)):
            x = torch.randint(0, cfg.model.vocab_size, (B, t.seq_len), generator=g)
            with autocast(amp, "cpu"):
                loss = fwd(x, x)
            loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, t.batch_tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["demo", "cpu"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"machine: {cpu_model()} ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"auto picks: {resolve_amp('auto', 'cpu')}")
    print(f"{'preset':<10} {'amp':<5} {'ms/step':>9} {'tokens/s':>10}")
    for p in args.presets:
        rows = {}
        for amp in ("fp32", "bf16"):
            sec, tok = time_steps(p, amp, args.steps, args.warmup)
            rows[amp] = sec
            print(f"{p:<10} {amp:<5} {sec * 1000:>9.1f} {tok / sec:>10.0f}", flush=True)
        print(f"{p:<10} bf16 speed-up ×{rows['fp32'] / rows['bf16']:.2f}")


if __name__ == "__main__":
    main()
