"""Model FLOPs utilisation (MFU) of a finished pgolf run on this machine.

Maths (PaLM App. B / nanoGPT ``estimate_mfu``), per trained token, forward + backward = 3 × forward:

    FLOPs/token = 6 · N_matmul + 6 · L · T · d          (causal attention: half of 12·L·T·d)

with N_matmul the parameters that take part in a matmul (every block linear, plus the V×d output
head — the tied embedding counts once, as the head; the embedding lookup is not a matmul),
L layers, T the training sequence length and d the model width. Vector/scalar parameters
(norm-free gains, resid_mix, q_gain, skip weights) are negligible and excluded.

    achieved FLOP/s = tokens_per_second × FLOPs/token
    MFU = achieved FLOP/s ÷ peak matmul FLOP/s of this machine in the run's dtype,

the peak measured right now by :func:`bench.matmul_flops.measure_peak_flops` (so both numbers
come from the same machine; still, run it when nothing else loads the CPU).

    python bench/mfu.py runs/cpu-enwiki            # reads config.json + metrics.json
    python bench/mfu.py runs/a runs/b --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.matmul_flops import measure_peak_flops  # noqa: E402
from pgolf.config import ModelConfig, load_config  # noqa: E402
from pgolf.model.gpt import GPT  # noqa: E402


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters used in matmuls: 2-D block weights + the output head (tied: the embedding)."""
    with torch.device("meta"):
        model = GPT(cfg)
    n = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and name.startswith("blocks."))
    return n + cfg.vocab_size * cfg.model_dim


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return 6 * matmul_params(cfg) + 6 * cfg.num_layers * seq_len * cfg.model_dim


def mfu_row(run_dir: Path, peaks: dict[str, float]) -> dict:
    cfg = load_config(str(run_dir / "config.json"))
    m = json.loads((run_dir / "metrics.json").read_text())
    fpt = flops_per_token(cfg.model, cfg.train.seq_len)
    achieved = m["tokens_per_second"] * fpt
    dtype = cfg.train.amp_dtype
    return {
        "run": str(run_dir),
        "params": m["params"],
        "matmul_params": matmul_params(cfg.model),
        "flops_per_token": fpt,
        "tokens_per_second": m["tokens_per_second"],
        "achieved_gflops": achieved / 1e9,
        "dtype": dtype,
        "peak_gflops": peaks[dtype] / 1e9,
        "mfu": achieved / peaks[dtype],
        "peak_bf16_gflops": peaks["bf16"] / 1e9,
        "mfu_vs_bf16_peak": achieved / peaks["bf16"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    peaks = {"bf16": measure_peak_flops(torch.bfloat16, "cpu"), "fp32": measure_peak_flops(torch.float32, "cpu")}
    rows = [mfu_row(r, peaks) for r in args.runs]
    print("| run | params | FLOPs/token | tokens/s | achieved GFLOP/s | dtype | peak GFLOP/s | MFU | MFU vs bf16 peak |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['params']:,} | {r['flops_per_token']:,} | {r['tokens_per_second']:,.0f} | "
              f"{r['achieved_gflops']:.1f} | {r['dtype']} | {r['peak_gflops']:.0f} | {100 * r['mfu']:.2f} % | "
              f"{100 * r['mfu_vs_bf16_peak']:.2f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
