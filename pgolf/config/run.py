"""The whole configuration: :class:`RunConfig` (its sections and the checks that span them), reading
it back from JSON (:meth:`RunConfig.from_dict`, :func:`load_config`) and :data:`NOT_RESULT_CHANGING`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig, parse_eval_method, ttt_ssm_message
from pgolf.config.export import ExportConfig
from pgolf.config.model import ModelConfig
from pgolf.config.optim import OptimConfig
from pgolf.config.overrides import _build, _check
from pgolf.config.train import TrainConfig
from pgolf.errors import ConfigError

NOT_RESULT_CHANGING = frozenset({
    "name", "data.path", "data.tokenizer", "data.overlap_check", "data.overlap_prescan",
    "train.seed", "train.device", "train.threads", "train.log_every", "train.val_every",
    "train.val_tokens_during_training", "train.checkpoint_every_seconds", "train.autosize_cache", "track",
})
"""Flat config keys that do not change a run's result: the seed (runs are grouped across seeds), the name
(a label), where the data and tokenizer live (the data enters an identity by its content), and what only
changes how a run reports or where it runs. Every other field is result-changing: it is part of the
identity of an experiment (:mod:`pgolf.identity`) and is embedded in its ``train_gpt.py`` bundle; these
reach a bundle as the challenge's environment variables (SEED, DATA_PATH, TRAIN_LOG_EVERY, …)."""


@dataclass
class RunConfig:
    name: str = "run"
    """Recipe name (the preset it came from)."""
    track: Literal["10min_16mb", "non_record_16mb"] = "10min_16mb"
    """The challenge track the run is judged on (:mod:`pgolf.tracks`, openai/parameter-golf README): ``10min_16mb``
    (``records/track_10min_16mb/``: training ≤ 600 s and evaluation ≤ 600 s on 8×H100, a significant win) or
    ``non_record_16mb`` (``records/track_non_record_16mb/``: no training-time limit, no significance claim, e.g. the
    4-hour baseline ``2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3``). Both cap the artifact at 16,000,000
    bytes. Read by ``pgolf info --hardware``, ``pgolf submit`` and ``pgolf review``; changes no result."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.objective == "mdlm":  # an MDLM run is scored by its bound, not by an exact method
            _check(self.eval.method == "plain", "model.objective=mdlm is scored by its variational bound "
                   f"(val_var_bpb), not by eval.method={self.eval.method}: set eval.method=plain")
        if self.model.ssm_layers and parse_eval_method(self.eval.method)[0] == "ttt":
            _check(self.eval.ttt.mode == "sgd", ttt_ssm_message(self.eval.ttt.mode))

    @property
    def eval_seq_len(self) -> int:
        """The context per scored sequence of every evaluation: ``eval.seq_len``, or ``train.seq_len`` when it
        is 0."""
        return self.eval.seq_len or self.train.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output (JSON lists become tuples); unknown keys are an error
        (a config from a newer pgolf), values are coerced to the field types and checked."""
        return _build(cls, d, "")


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
