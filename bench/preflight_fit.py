"""Fit the 8xH100 entry of pgolf.preflight's table on the records' logs and report every error.

Data (each from the record's own log, CATALOGUE §0/§3; train_time / steps at the wallclock stop):

- [03-17b] NaiveBaseline ``train.log``: 13,780 steps in 600,038 ms; plain eval 1,401 ms;
- [03-22] ``train_seed1337.log``: 7,096 steps in 600,036 ms; DIAGNOSTIC post_ema eval 1,960 ms;
- [04-27a] ``train_seed42.log``: 4,945 steps in 599,592 ms (loop on from 35 %); diagnostic eval 6,718 ms.
- phased score-first TTT, ``quantized_ttt_phased … eval_time`` of every seed's log (mean): [04-14] 332,086 /
  332,804 / 329,031 ms; [04-19] 399,334 / 395,504 / 396,853 ms; [04-27a] 455,128 / 470,022 / 508,785 ms
  (their compile warm-up, 80–160 s, ran before the timer).

Model: ms/step = overhead + 1000·B·F_train/R (the loop phases time-weighted); eval s = N_val·F_fwd/R_eval;
TTT s = pgolf.preflight.ttt_flops / R_ttt (R_eval and R_ttt: geometric means of FLOPs / logged seconds).
Fits (least squares on relative errors) and prints in-sample and leave-one-out errors per preset.

    python bench/preflight_fit.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.optimize import least_squares  # noqa: E402

from pgolf.model.flops import forward_flops_per_token, train_flops_per_token  # noqa: E402
from pgolf.preflight import VAL_TOKENS, VAL_TOKENS_CASEOPS, ttt_flops  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402

STEPS = {"baseline": 600_038 / 13_780, "record-0322": 600_036 / 7_096, "record-0427": 599_592 / 4_945}
EVALS = {"baseline": 1.401, "record-0322": 1.960, "record-0427": 6.718}
TTT = {"record-0414": (332.086, 332.804, 329.031), "record-0419": (399.334, 395.504, 396.853),
       "record-0427": (455.128, 470.022, 508.785)}
"""Logged phased-TTT eval seconds per seed."""


def val_tokens(preset: str) -> int:
    c = get_preset(preset)
    return VAL_TOKENS_CASEOPS if "caseops" in c.data.path else VAL_TOKENS[c.model.vocab_size]


def ttt_rate(names: list[str]) -> float:
    """R_ttt: the geometric mean over ``names`` of TTT FLOPs / mean logged seconds."""
    logs = [math.log(ttt_flops(get_preset(p), val_tokens(p)) / (sum(TTT[p]) / len(TTT[p]))) for p in names]
    return math.exp(sum(logs) / len(logs))


def predict_ms(preset: str, overhead: float, rate: float) -> float:
    c = get_preset(preset)
    r = c.model.recur

    def ms(loop: bool | None) -> float:
        return overhead + 1000 * c.train.batch_tokens * train_flops_per_token(c.model, c.train.seq_len, loop) / rate

    if r.loops and r.start_frac > 0:
        return 1 / (r.start_frac / ms(False) + (1 - r.start_frac) / ms(True))
    return ms(None)


def eval_flops(preset: str) -> float:
    c = get_preset(preset)
    n = VAL_TOKENS_CASEOPS if "caseops" in c.data.path else VAL_TOKENS[c.model.vocab_size]
    return n * forward_flops_per_token(c.model, c.eval_seq_len)


def fit(names: list[str]) -> tuple[float, float]:
    sol = least_squares(lambda x: [predict_ms(p, x[0], x[1] * 1e15) / STEPS[p] - 1 for p in names], [20.0, 2.5])
    return float(sol.x[0]), float(sol.x[1] * 1e15)


def main() -> None:
    names = list(STEPS)
    oh, rate = fit(names)
    r_eval = math.exp(sum(math.log(eval_flops(p) / EVALS[p]) for p in names) / len(names))
    print(f"8xH100 fit: overhead {oh:.2f} ms/step, R {rate:.4g} FLOP/s ({rate / 8 / 1e12:.0f} TFLOP/s per GPU); "
          f"R_eval {r_eval:.4g} FLOP/s (geometric mean)")
    print(f"{'preset':<13} {'logged ms':>10} {'fit ms':>8} {'err':>7} {'LOO ms':>8} {'LOO err':>8} "
          f"{'eval s':>7} {'pred s':>7} {'err':>6}")
    for p in names:
        pred = predict_ms(p, oh, rate)
        loo_oh, loo_rate = fit([q for q in names if q != p])
        loo = predict_ms(p, loo_oh, loo_rate)
        ev = eval_flops(p) / r_eval
        print(f"{p:<13} {STEPS[p]:>10.2f} {pred:>8.2f} {pred / STEPS[p] - 1:>+7.1%} {loo:>8.2f} "
              f"{loo / STEPS[p] - 1:>+8.1%} {EVALS[p]:>7.2f} {ev:>7.2f} {ev / EVALS[p] - 1:>+6.0%}")


def ttt_table() -> None:
    names = list(TTT)
    r = ttt_rate(names)
    print(f"\nphased TTT: R_ttt {r:.4g} FLOP/s (geometric mean over {', '.join(names)})")
    print(f"{'preset':<13} {'logged s (seeds)':>24} {'mean':>7} {'fit s':>7} {'err':>6} {'LOO s':>7} {'LOO err':>8}")
    for p in names:
        mean = sum(TTT[p]) / len(TTT[p])
        fl = ttt_flops(get_preset(p), val_tokens(p))
        fit_s, loo_s = fl / r, fl / ttt_rate([q for q in names if q != p])
        seeds = "/".join(f"{x:.0f}" for x in TTT[p])
        print(f"{p:<13} {seeds:>24} {mean:>7.1f} {fit_s:>7.1f} {fit_s / mean - 1:>+6.1%} {loo_s:>7.1f} "
              f"{loo_s / mean - 1:>+8.1%}")


if __name__ == "__main__":
    main()
    ttt_table()
