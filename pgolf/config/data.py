"""``data``: where the shards and the tokenizer live, and how much validation to score."""

from __future__ import annotations

from dataclasses import dataclass

from pgolf.config.overrides import _check


@dataclass
class DataConfig:
    path: str = ""
    """Directory with ``fineweb_{train,val}_*.bin`` shards (+ ``manifest.json``, byte sidecar).
    Empty: the embedded default corpus, built once into the user cache (see ``pgolf.data.embedded``)."""
    tokenizer: str = ""
    """SentencePiece ``.model``. Empty: ``tokenizer.model`` inside ``path`` (``pgolf data build`` writes it)."""
    val_max_tokens: int = 0
    """Evaluate on at most this many validation tokens (0 = all). Scored runs keep 0."""
    overlap_check: bool = True
    """Refuse train shards that hold a validation document (:mod:`pgolf.data.provenance`; ≈1 s per
    100 M-token shard on one CPU core, docs/benchmarks.md). Off = trust the data (the official export
    fetched by ``pgolf data fetch`` is never second-guessed)."""
    overlap_prescan: bool = True
    """With ``overlap_check``: check every train shard before the training clock starts, the shards split
    across the ranks (8 ranks share the challenge's 80 shards: ≈10 s each, once). Off: each shard is
    checked when the loader first reads it, inside the clock — and on every rank that reads it."""

    def __post_init__(self) -> None:
        _check(self.val_max_tokens >= 0, "data.val_max_tokens must be >= 0")
