"""Synthetic run records (the dict shape ``pgolf.track`` takes) for the plot and report tests."""

from __future__ import annotations

from typing import Any


def record(run_id: str, config_hash: str = "h0", seed: int | None = 1, val_bpb: float | None = 1.2, *,
           artifact_bytes: int | None = 15_000_000, train_seconds: float | None = 600.0, preset: str = "tiny",
           config: dict[str, Any] | None = None, train: list | None = None, val: list | None = None,
           tags: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if val_bpb is not None:
        metrics.update(val_bpb=val_bpb, val_bpb_raw=val_bpb - 0.01, pre_quant_val_bpb=val_bpb - 0.005)
    if artifact_bytes is not None:
        metrics.update(artifact_bytes=artifact_bytes, model_bytes=artifact_bytes - 50_000, code_bytes=50_000)
    if train_seconds is not None:
        metrics.update(train_seconds=train_seconds, eval_seconds=30.0, steps=100, tokens_per_second=1.5e6)
    base = {
        "run_id": run_id, "kind": "run", "created": f"2026-01-01T00:00:{len(run_id) % 60:02d}+00:00",
        "preset": preset, "config_hash": config_hash, "seed": seed, "tags": tags or [], "dataset": "fineweb10B_sp1024",
        "machine": "8xH100", "git_commit": "0123456789abcdef", "dirty": False,
        "config": {"model.num_layers": 9, "train.seed": seed, **(config or {})}, "metrics": metrics,
        "curves": {"train": train or [], "val": val or []}, "run_dir": None,
    }
    base.update(fields)
    return base


def ablation_records() -> list[dict[str, Any]]:
    """Three configurations × seeds (3, 3, 1) with curves, plus one run still training (no metrics)."""
    recs = []
    for h, layers, vals, art in (("base", 9, [1.2210, 1.2230, 1.2200], 15_800_000),
                                 ("deep", 11, [1.2105, 1.2150, 1.2121], 16_400_000),
                                 ("wide", 10, [1.2300], 14_900_000)):
        for seed, v in zip((1337, 42, 2025)[:len(vals)], vals, strict=True):
            rid = f"{h}-s{seed}"
            recs.append(record(rid, h, seed, v, artifact_bytes=art + seed, train_seconds=590.0 + seed % 7,
                               config={"model.num_layers": layers},
                               train=[[s, 7.0 - s / 100 - seed % 5 / 10, s * 0.6] for s in (1, 100, 200, 300)],
                               val=[[s, v + 0.3 - s / 1000, s * 0.6] for s in (150, 300)]))
    recs.append(record("running", "base", 7, None, artifact_bytes=None, train_seconds=None, kind="train",
                       config={"model.num_layers": 9}, train=[[1, 6.9, 0.5], [50, 5.0, 25.0]]))
    return recs
