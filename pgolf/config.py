"""Typed configuration for every stage of pgolf.

A run is described by one :class:`RunConfig` made of sections (``data``, ``model``, ``optim``,
``train``, ``export``, ``eval``). Named recipes live in :mod:`pgolf.presets` as functions that
return a ``RunConfig``; any field can be overridden from the command line with
``--set section.key=value`` (see :func:`apply_overrides`). Unknown keys and values that do not
parse are a :class:`~pgolf.errors.ConfigError`.

Defaults are the challenge's naive baseline (``train_gpt.py`` at the root of
openai/parameter-golf, CATALOGUE §1.3–§1.7). Every technique added later is one field, off by
default, documented with its source record.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pgolf.errors import ConfigError


@dataclass
class DataConfig:
    path: str = ""
    """Directory with ``fineweb_{train,val}_*.bin`` shards (+ ``manifest.json``, byte sidecar).
    Empty: the embedded default corpus, built once into the user cache (see ``pgolf.data.embedded``)."""
    tokenizer: str = ""
    """SentencePiece ``.model``. Empty: ``tokenizer.model`` inside ``path`` (``pgolf data build`` writes it)."""
    val_max_tokens: int = 0
    """Evaluate on at most this many validation tokens (0 = all). Scored runs keep 0."""

    def __post_init__(self) -> None:
        _check(self.val_max_tokens >= 0, "data.val_max_tokens must be >= 0")


@dataclass
class ModelConfig:
    """Shape of the GPT; the defaults are the challenge baseline (17,059,912 parameters)."""

    vocab_size: int = 1024
    """Vocabulary size; must equal the tokenizer's and exceed every shard id."""
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    """Grouped-query attention: key/value heads, dividing ``num_heads``."""
    mlp_mult: int = 2
    """MLP hidden width = mlp_mult × model_dim (ReLU²)."""
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    """logits ← c·tanh(z/c); 0 disables."""
    qk_gain_init: float = 1.5
    """Initial per-head multiplier on the (normalized) queries."""
    tied_embed_init_std: float = 0.005

    def __post_init__(self) -> None:
        _check(0 < self.vocab_size <= 65536, "model.vocab_size must be in 1..65536 (uint16 shards)")
        _check(self.num_layers >= 1, "model.num_layers must be >= 1")
        _check(self.num_heads >= 1 and self.num_kv_heads >= 1, "model heads must be >= 1")
        _check(self.model_dim % self.num_heads == 0, "model.model_dim must be divisible by model.num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be divisible by model.num_kv_heads")
        _check((self.model_dim // self.num_heads) % 2 == 0, "head_dim (model_dim/num_heads) must be even for RoPE")
        _check(self.mlp_mult >= 1, "model.mlp_mult must be >= 1")
        _check(self.logit_softcap >= 0, "model.logit_softcap must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads


@dataclass
class OptimConfig:
    """Muon on 2-D block matrices, Adam on embeddings and scalars (CATALOGUE §1.4)."""

    matrix_lr: float = 0.04
    """Muon learning rate for 2-D block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors, scalars, control tensors and skip weights."""
    tied_embed_lr: float = 0.05
    """Adam learning rate for the tied embedding."""
    embed_lr: float = 0.6
    """Adam learning rate for the input embedding when untied."""
    head_lr: float = 0.008
    """Adam learning rate for the output head when untied."""
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    """Muon momentum rises linearly from ``muon_momentum_warmup_start`` over this many steps."""
    muon_backend_steps: int = 5
    """Newton–Schulz iterations."""
    muon_nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = off, the baseline)."""

    def __post_init__(self) -> None:
        for name in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr"):
            _check(getattr(self, name) >= 0, f"optim.{name} must be >= 0")
        _check(0 <= self.muon_momentum < 1, "optim.muon_momentum must be in [0, 1)")
        _check(self.muon_backend_steps >= 1, "optim.muon_backend_steps must be >= 1")
        _check(self.grad_clip_norm >= 0, "optim.grad_clip_norm must be >= 0")


@dataclass
class TrainConfig:
    """The budgeted training loop (CATALOGUE §1.5, §1.6)."""

    seed: int = 1337
    iterations: int = 20000
    """Upper bound on optimizer steps; the wallclock budget usually stops first."""
    max_wallclock_seconds: float = 600.0
    """Training-time budget (the challenge's stop rule); 0 = iterations only."""
    warmup_steps: int = 20
    """Priming steps (compile/autotune) whose effect is rolled back — not an LR warmup (§1.5)."""
    warmdown_frac: float = 0.0
    """If > 0: the LR multiplier decays linearly to 0 over the last ``warmdown_frac`` of the
    training budget (of wallclock when a budget is set, else of ``iterations``). Right on any hardware."""
    warmdown_iters: int = 1200
    """Used when ``warmdown_frac`` = 0: the baseline's rule, window = warmdown_iters × mean step
    time (§1.5). On slow hardware this window exceeds the run; prefer ``warmdown_frac``."""
    batch_tokens: int = 524288
    """Global tokens per optimizer step (all ranks, all micro-steps)."""
    seq_len: int = 1024
    grad_accum: int = 0
    """Micro-steps per optimizer step on each rank; 0 = 8 // world_size, the baseline's rule."""
    val_every: int = 1000
    """Validate every N steps (0 = only at the end)."""
    val_tokens_during_training: int = 0
    """Periodic validations use at most this many val tokens (0 = all). The final eval uses all."""
    log_every: int = 200
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    amp_dtype: str = "bf16"
    """Autocast dtype for matmuls: "bf16" (the challenge's) or "fp32" (no autocast)."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""
    threads: int = 0
    """torch intra-op threads on CPU (0 = torch's default)."""
    checkpoint_every_seconds: float = 60.0
    """Write a resumable checkpoint at most this often (0 = only at the end)."""
    calib_reserve_seconds: float = 0.0
    """GPTQ calibration on training tokens inside the training budget (CATALOGUE §2.5 "Calibration
    data": [03-29] reserves 14 s, [04-14] 4 s, [04-23]+ 0.5 s): when > 0 the loop trains until
    ``max_wallclock_seconds`` − reserve, then collects input Hessians from the same training loader
    within the reserve and saves them to ``hessians.safetensors`` in the run directory. 0 = off."""

    def __post_init__(self) -> None:
        _check(self.iterations >= 1, "train.iterations must be >= 1")
        _check(self.max_wallclock_seconds >= 0, "train.max_wallclock_seconds must be >= 0")
        _check(0 <= self.warmdown_frac <= 1, "train.warmdown_frac must be in [0, 1]")
        _check(self.warmup_steps >= 0 and self.warmdown_iters >= 0, "train warmup/warmdown must be >= 0")
        _check(self.seq_len >= 1 and self.batch_tokens >= self.seq_len, "train.batch_tokens must be >= train.seq_len")
        _check(self.grad_accum >= 0, "train.grad_accum must be >= 0")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda")
        _check(self.amp_dtype in ("bf16", "fp32"), "train.amp_dtype must be bf16 or fp32")
        _check(self.calib_reserve_seconds >= 0, "train.calib_reserve_seconds must be >= 0")
        _check(
            self.max_wallclock_seconds == 0 or self.calib_reserve_seconds < self.max_wallclock_seconds,
            "train.calib_reserve_seconds must be smaller than train.max_wallclock_seconds",
        )


@dataclass
class ExportConfig:
    """How the trained weights become the artifact (CATALOGUE §1.7, §2.5)."""

    scheme: str = "int8_zlib"
    """Export scheme (``pgolf.artifact.export.EXPORT_SCHEMES``): ``int8_zlib`` the baseline's per-row
    int8 + zlib-9; ``int6_gptqlite_zstd`` [03-22]; ``gptq6_emb7_brotli`` [04-14]; ``budget`` the
    byte-budget search (``pgolf.quant.search``) filling ``budget_bytes``."""
    budget_bytes: int = 16_000_000
    """Artifact cap (code + model bytes), decimal bytes."""
    keep_float_max_numel: int = 65536
    """``int8_zlib``: float tensors with at most this many elements are stored as fp16/fp32, not
    quantized (the baseline's 65,536; lower it for narrow models whose matrices are that small)."""
    calib_source: str = "auto"
    """Where GPTQ Hessians come from: ``auto`` (the run's ``hessians.safetensors``, collected on
    training tokens inside the training budget, see ``train.calib_reserve_seconds``; else
    self-generated), ``train`` (require the saved ones) or ``generated`` ([03-25]). Never validation."""
    calib_seqs: int = 64
    """Self-generated calibration sequences ([03-25]: 64 × 2048, temperature 0.8)."""
    calib_seq_len: int = 0
    """Tokens per generated sequence (0 = ``train.seq_len``)."""
    calib_temperature: float = 0.8
    calib_seed: int = 1337
    search_bits: str = "4,5,6,7,8"
    """``budget``: grid bits tried per tensor group (comma-separated)."""
    search_k: str = "6,8,10,12,13,15,17,20,24"
    """``budget``: SDClip multipliers k tried (clip = k·std(row)), in addition to GPTQ-lite's search
    (12, 13, 15 are [04-14]'s, so its recipe is one of the plans searched)."""
    search_gptq: bool = True
    """``budget``: also try full GPTQ for every grid (needs Hessians)."""
    search_lqer_rank: int = 4
    """``budget``: LQER rank tried on top of the best grids ([04-27a]: 4); 0 = no LQER options."""
    search_lqer_top: int = 1
    """``budget``: LQER corrects this many tensors of a group (largest error first)."""
    search_max_options: int = 10
    """``budget``: grids per group whose compressed bytes are measured exactly (after a screen by
    entropy; the rest are dominated)."""
    search_weights: str = "loss"
    """``budget``: how errors of different groups are compared: ``hessian`` (Σ tr(E H Eᵀ) as is) or
    ``loss`` (each group's tr(E H Eᵀ) rescaled by its measured loss increase on self-generated text)."""
    verify_plans: int = 4
    """``budget``: evaluate this many candidate plans on self-generated text and keep the best (0 = off)."""
    verify_seqs: int = 16
    """Self-generated sequences for the loss checks (a different seed from the calibration ones)."""

    def __post_init__(self) -> None:
        _check(self.budget_bytes > 0, "export.budget_bytes must be > 0")
        _check(self.keep_float_max_numel >= 0, "export.keep_float_max_numel must be >= 0")
        _check(self.calib_source in ("auto", "train", "generated"), "export.calib_source must be auto, train or generated")
        _check(self.calib_seqs >= 1 and self.calib_seq_len >= 0, "export.calib_seqs must be >= 1, calib_seq_len >= 0")
        _check(self.calib_temperature >= 0, "export.calib_temperature must be >= 0")
        _check(self.search_weights in ("hessian", "loss"), "export.search_weights must be hessian or loss")
        _check(self.search_lqer_rank >= 0 and self.search_lqer_top >= 0, "export.search_lqer_* must be >= 0")
        _check(self.search_max_options >= 1, "export.search_max_options must be >= 1")
        _check(self.verify_plans >= 0 and self.verify_seqs >= 1, "export.verify_plans >= 0, verify_seqs >= 1")
        for key in ("search_bits", "search_k"):
            try:
                vals = [float(v) for v in getattr(self, key).split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"export.{key} must be comma-separated numbers, got {getattr(self, key)!r}") from None
            _check(bool(vals), f"export.{key} must list at least one value")
            if key == "search_bits":
                _check(all(v.is_integer() and 2 <= v <= 8 for v in vals), "export.search_bits must be integers in 2..8")
            else:
                _check(all(v > 0 for v in vals), "export.search_k must be > 0")


@dataclass
class EvalConfig:
    """Evaluation of the reloaded artifact (CATALOGUE §1.2)."""

    seq_len: int = 0
    """Context per scored sequence (0 = train.seq_len)."""
    batch_tokens: int = 524288
    """Global validation tokens per forward batch (``VAL_BATCH_SIZE``)."""
    compile: bool = False
    """Wrap the evaluated model in ``torch.compile`` (one compile per evaluation, plus one for a
    short last batch). On the 2-core CPU it pays off even for 1.1 M validation tokens: the ``cpu``
    preset's final eval takes 11.6 s compiled vs 35.8 s eager, so ``demo`` and ``cpu`` turn it on."""

    def __post_init__(self) -> None:
        _check(self.seq_len >= 0, "eval.seq_len must be >= 0")
        _check(self.batch_tokens >= 1, "eval.batch_tokens must be >= 1")


@dataclass
class RunConfig:
    name: str = "run"
    """Recipe name (the preset it came from)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (a config from a newer pgolf)."""
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON object")
        kwargs: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for key, value in d.items():
            if key not in hints:
                raise ConfigError(f"unknown config section {key!r}")
            sec_type = hints[key]
            if dataclasses.is_dataclass(sec_type):
                if not isinstance(value, dict):
                    raise ConfigError(f"config section {key!r} must be an object")
                sec_hints = typing.get_type_hints(sec_type)
                unknown = sorted(set(value) - set(sec_hints))
                if unknown:
                    raise ConfigError(f"unknown config key {key}.{unknown[0]}")
                kwargs[key] = sec_type(**{k: _coerce(f"{key}.{k}", v, sec_hints[k]) for k, v in value.items()})
            else:
                kwargs[key] = _coerce(key, value, sec_type)
        return cls(**kwargs)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (a string from the CLI or a JSON value) to the field type ``typ``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # Optional[...]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            s = str(value).strip().replace("_", "")
            f = float(s)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot parse {value!r} as {getattr(typ, '__name__', typ)}") from None
    return value


def apply_overrides(cfg: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (validated again)."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        path, value = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) == 1 and parts[0] == "name":
            d["name"] = value
            continue
        if len(parts) != 2:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        section, key = parts
        if section not in d or not isinstance(d[section], dict):
            raise ConfigError(f"unknown config section {section!r} in --set {item}")
        if key not in d[section]:
            raise ConfigError(f"unknown config key {section}.{key}")
        d[section][key] = value  # coerced (and checked) by from_dict
    return RunConfig.from_dict(d)


def load_config(path: str) -> RunConfig:
    """Read a ``config.json`` written by a run."""
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    return RunConfig.from_dict(d)
