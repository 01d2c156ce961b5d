"""The entry point of the standalone ``train_gpt.py`` that ``pgolf bundle`` writes.

    DATA_PATH=./data/datasets/fineweb10B_sp1024 TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model \\
        RUN_ID=seed42 SEED=42 torchrun --standalone --nproc_per_node=8 train_gpt.py
    DATA_PATH=runs/data python train_gpt.py                 # one process, CPU or one GPU

The bundle embeds its configuration (:func:`pgolf.bundler.bundle_config`); the environment
variables of the challenge's root ``train_gpt.py`` (openai/parameter-golf, its ``Hyperparameters``;
CATALOGUE §1.3–§1.6) override it, with the same names (:data:`CHALLENGE_ENV`), then
:func:`pgolf.runner.run` trains within the wallclock cap, exports with the configured scheme, reloads
the artifact from disk and evaluates it, printing the challenge's log lines (``step:…/… train_loss:…``,
``stopping_early: wallclock_cap …``, ``Serialized model …``, ``Code size: …``, ``Total submission size
…``, ``final_<scheme>_roundtrip_exact val_loss:… val_bpb:…``).

Data: ``DATA_PATH`` (default the challenge's ``./data/datasets/fineweb10B_sp{vocab}``, or
``fineweb10B_byte260`` at vocab 260) and ``TOKENIZER_PATH`` (default ``tokenizer.model`` in the data
directory when there is one, as ``pgolf data build`` writes it, else the challenge's
``./data/tokenizers/fineweb_{vocab}_bpe.model``; at vocab 260 the byte vocabulary ``byte260``, which has no
model file: ``pgolf data build --tokenizer byte260`` writes none). The run
directory is ``PGOLF_RUN_DIR``, default ``runs/{RUN_ID}``; without ``RUN_ID`` rank 0 draws one and
shares it with the other ranks. ``PGOLF_SET`` ("section.key=value ..." separated by spaces) overrides
any other field, as ``--set`` does — but a switch whose code the bundle left out stays unavailable
(the bundle's importer names it).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pgolf import dist
from pgolf.config import RunConfig, apply_changes, apply_overrides
from pgolf.errors import PgolfError

CHALLENGE_ENV: dict[str, str] = {
    "DATA_PATH": "data.path",
    "TOKENIZER_PATH": "data.tokenizer",
    "SEED": "train.seed",
    "VAL_BATCH_SIZE": "eval.batch_tokens",
    "VAL_LOSS_EVERY": "train.val_every",
    "TRAIN_LOG_EVERY": "train.log_every",
    "ITERATIONS": "train.iterations",
    "WARMDOWN_ITERS": "train.warmdown_iters",
    "WARMUP_STEPS": "train.warmup_steps",
    "TRAIN_BATCH_TOKENS": "train.batch_tokens",
    "TRAIN_SEQ_LEN": "train.seq_len",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "VOCAB_SIZE": "model.vocab_size",
    "NUM_LAYERS": "model.num_layers",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "MLP_MULT": "model.mlp_mult",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "ROPE_BASE": "model.rope_base",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "EMBED_LR": "optim.embed_lr",
    "HEAD_LR": "optim.head_lr",
    "TIED_EMBED_LR": "optim.tied_embed_lr",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "MATRIX_LR": "optim.matrix_lr",
    "SCALAR_LR": "optim.scalar_lr",
    "MUON_MOMENTUM": "optim.muon_momentum",
    "MUON_BACKEND_STEPS": "optim.muon_backend_steps",
    "MUON_MOMENTUM_WARMUP_START": "optim.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "optim.muon_momentum_warmup_steps",
    "BETA1": "optim.beta1",
    "BETA2": "optim.beta2",
    "ADAM_EPS": "optim.adam_eps",
    "GRAD_CLIP_NORM": "optim.grad_clip_norm",
}
"""The challenge's environment variables (root ``train_gpt.py``) → the config field each sets."""


def run_env(cfg: RunConfig) -> dict[str, str]:
    """The environment that gives a bundle of ``cfg`` the run's own non-result fields (the seed, logging,
    threads, device: :data:`~pgolf.config.NOT_RESULT_CHANGING`, which the bundle does not embed), where
    they differ from the defaults: the challenge's variable where it has one (``SEED``, ``TRAIN_LOG_EVERY``,
    ``VAL_LOSS_EVERY``), else ``PGOLF_SET``. Paths and the name are left to the caller."""
    from pgolf.config import NOT_RESULT_CHANGING, flatten

    have, default = flatten(cfg), flatten(RunConfig())
    by_field = {f: var for var, f in CHALLENGE_ENV.items()}
    env: dict[str, str] = {}
    sets: list[str] = []
    for key in ["train.seed", *sorted(NOT_RESULT_CHANGING - {"name", "data.path", "data.tokenizer", "train.seed"})]:
        if have[key] == default[key] and key != "train.seed":
            continue
        value = have[key]
        text = str(value).lower() if isinstance(value, bool) else ",".join(map(str, value)) \
            if isinstance(value, tuple) else str(value)
        if key in by_field:
            env[by_field[key]] = text
        else:
            sets.append(f"{key}={text}")
    if sets:
        env["PGOLF_SET"] = " ".join(sets)
    return env


def configure(embedded: Mapping[str, Any], environ: Mapping[str, str]) -> RunConfig:
    """The run's config: the embedded fields, then :data:`CHALLENGE_ENV` values that are set, then
    ``PGOLF_SET``, then the data defaults (module docstring). Bad values are a ConfigError naming the variable."""
    cfg = RunConfig.from_dict(dict(embedded))
    given = {var: environ[var] for var in CHALLENGE_ENV if var in environ}
    try:  # all at once: NUM_HEADS=6 NUM_KV_HEADS=3 is valid together, not one after the other
        cfg = apply_changes(cfg, [(CHALLENGE_ENV[var], value) for var, value in given.items()])
    except PgolfError as e:
        alone = [var for var, value in given.items() if not _applies(cfg, CHALLENGE_ENV[var], value)]
        names = alone or list(given)  # those that fail even alone, else all of them
        raise type(e)(f"environment variable{'s' if len(names) > 1 else ''} "
                      f"{', '.join(f'{v}={given[v]!r}' for v in names)}: {e}") from None
    cfg = apply_overrides(cfg, environ.get("PGOLF_SET", "").split())
    v = cfg.model.vocab_size
    byte_vocab = v == 260  # the challenge's byte260 export (vocab 260 = 4 specials + 256 bytes)
    changes: list[tuple[str, Any]] = []
    if not cfg.data.path:
        changes.append(("data.path", "./data/datasets/fineweb10B_byte260" if byte_vocab else
                        f"./data/datasets/fineweb10B_sp{v}"))
    data_dir = Path(changes[0][1] if changes else cfg.data.path)
    if not cfg.data.tokenizer and not (data_dir / "tokenizer.model").exists():
        changes.append(("data.tokenizer", "byte260" if byte_vocab else f"./data/tokenizers/fineweb_{v}_bpe.model"))
    return apply_changes(cfg, changes) if changes else cfg


def _applies(cfg: RunConfig, path: str, value: str) -> bool:
    try:
        apply_changes(cfg, [(path, value)])
    except PgolfError:
        return False
    return True


def run_id(environ: Mapping[str, str], device: torch.device) -> str:
    """``RUN_ID``, or one rank 0 draws and every rank receives (a collective under torchrun)."""
    if environ.get("RUN_ID"):
        return environ["RUN_ID"]
    drawn = torch.tensor(float(secrets.randbits(48) if dist.is_main() else 0), dtype=torch.float64, device=device)
    return f"{int(dist.all_reduce_(drawn, 'max').item()):012x}"


def main(embedded: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> int:
    """Run the bundle: configure, train → export → reload → evaluate, print the scorecard (rank 0).
    A user error prints ``train_gpt.py: error: <one line>`` and returns its exit code."""
    from pgolf.runner import run, scorecard

    environ = os.environ if environ is None else environ
    try:
        with dist.group_scope():
            cfg = configure(embedded, environ)
            info = dist.init(cfg.train.device)
            out = Path(environ.get("PGOLF_RUN_DIR") or Path("runs") / run_id(environ, info.device))
            metrics = run(cfg, out, progress=False)
    except PgolfError as e:
        print("train_gpt.py: error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return e.exit_code
    except ModuleNotFoundError as e:  # a switch turned on (PGOLF_SET) whose module the bundle left out
        if not (e.name or "").startswith("pgolf"):
            raise
        print(f"train_gpt.py: error: {e}; rebuild the bundle with `pgolf bundle` for this configuration",
              file=sys.stderr, flush=True)
        return 2
    if info.is_main:
        print(scorecard(metrics).replace("pgolf run", "train_gpt.py", 1))
        print(f"run directory: {out}", flush=True)
    return 0
