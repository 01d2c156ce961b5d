"""Named recipes: each is a function returning a :class:`~pgolf.config.RunConfig`.

``pgolf info NAME`` / ``pgolf run NAME`` look them up in :data:`PRESETS`; ``--set section.key=value``
overrides any field afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

from pgolf.config import (
    DataConfig,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from pgolf.errors import ConfigError


def baseline() -> RunConfig:
    """The official naive baseline [03-17b], unchanged: 9×512, sp1024, 524,288-token batches,
    600 s on 8×H100 (CATALOGUE §1.3–§1.7). Expects FineWeb sp1024 shards (``pgolf data fetch``)."""
    return RunConfig(name="baseline", data=DataConfig(path="data/datasets/fineweb10B_sp1024"))


def demo() -> RunConfig:
    """The main job on a fresh machine: the embedded corpus (Python's own documentation), a tiny
    model, 150 s of training; whole run ≤ 5 minutes on 2 CPU cores."""
    return RunConfig(
        name="demo",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2, mlp_mult=2),
        optim=OptimConfig(matrix_lr=0.04, scalar_lr=0.04, tied_embed_lr=0.05, muon_momentum_warmup_steps=100),
        train=TrainConfig(
            max_wallclock_seconds=150,
            warmup_steps=1,
            compile=True,
            warmdown_frac=0.3,
            batch_tokens=16384,
            seq_len=256,
            grad_accum=1,
            val_every=0,
            log_every=25,
            checkpoint_every_seconds=60,
        ),
        eval=EvalConfig(batch_tokens=65536, compile=True),
    )


def cpu() -> RunConfig:
    """Best configuration found for a 2-core CPU under a 600 s training budget with model bytes
    ≤ 1,000,000 (int8 + zlib). See docs/benchmarks.md for how it was chosen."""
    return RunConfig(
        name="cpu",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=3, model_dim=192, num_heads=4, num_kv_heads=2, mlp_mult=2),
        optim=OptimConfig(muon_momentum_warmup_steps=200),
        train=TrainConfig(
            max_wallclock_seconds=600,
            warmup_steps=2,
            compile=True,
            warmdown_frac=0.4,
            batch_tokens=8192,
            seq_len=256,
            grad_accum=1,
            val_every=500,
            val_tokens_during_training=65536,
            log_every=50,
        ),
        eval=EvalConfig(batch_tokens=65536, compile=True),  # compiled eval: 11.6 s vs 35.8 s eager
        export=ExportConfig(keep_float_max_numel=4096),
    )


def tiny() -> RunConfig:
    """For tests and CI: a model of a few thousand parameters that trains in seconds."""
    return RunConfig(
        name="tiny",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2),
        optim=OptimConfig(muon_momentum_warmup_steps=10),
        train=TrainConfig(
            iterations=20,
            max_wallclock_seconds=0,
            warmup_steps=0,
            warmdown_frac=0.2,
            batch_tokens=2048,
            seq_len=64,
            grad_accum=1,
            val_every=0,
            log_every=5,
            checkpoint_every_seconds=0,
            amp_dtype="fp32",
        ),
        eval=EvalConfig(batch_tokens=4096),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "demo": demo,
    "cpu": cpu,
    "baseline": baseline,
    "tiny": tiny,
}


def get_preset(name: str) -> RunConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
