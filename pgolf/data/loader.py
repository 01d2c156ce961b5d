"""Where the data is (:func:`resolve_data`), the training token stream, and the validation split.

Source: ``TokenStream`` / ``DistributedTokenLoader`` of the root ``train_gpt.py`` of
openai/parameter-golf (CATALOGUE §1.6).

The train shards, in order, form one token stream that wraps around to the first shard after
the last. Each :meth:`DistributedTokenLoader.next_batch` call takes the next
``W·(L+1)`` tokens of the stream, where W is the world size and
``L = global_tokens // (W · grad_accum)`` the tokens per rank per micro-step; rank r gets the
contiguous part ``[r·(L+1), (r+1)·(L+1))``, with ``x`` its first L tokens and ``y`` its last L
(the targets, shifted by one), both as ``int64[L/seq_len, seq_len]`` on the device. Every rank
reads the same stream and keeps only its part, so no communication is needed.

Consequence the DDP tests rely on: micro-step k of a single process with ``grad_accum = W·A``
receives exactly what rank ``k mod W`` receives at micro-step ``k // W`` with W processes and
``grad_accum = A``; the global batch and its order do not depend on how it is split.

Shards are read lazily, one at a time, and validated on read (magic, version, exact size, every
id < vocab size); with an ``overlap`` checker (:meth:`pgolf.data.prepare.RunData.overlap_checker`)
each shard is also checked, once, for copies of validation documents (``pgolf.data.overlap``),
and training stops with a DataError naming the shard, the offset and the validation document.
The stream position — (shard index, offset) — is the loader's state, so a resumed
run continues the exact stream. :func:`train_loader` builds the loader ``train.loader`` names: this one, or
the records' coprime-stride / shuffled-sequence window samplers (:mod:`pgolf.data.sampled`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pgolf import fileio
from pgolf.config import DataConfig, TrainConfig
from pgolf.data.shards import (
    list_byte_sidecars,
    list_shards,
    read_byte_sidecar,
    read_byte_sidecar_header,
    read_shard,
    read_shard_header,
    sidecar_path,
    sidecar_style,
)
from pgolf.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pgolf.data.overlap import OverlapChecker

BOS_ID = 1
PathLike = str | os.PathLike[str]


@dataclass
class DataSpec:
    """A resolved dataset: every path checked to exist, shard headers validated."""

    data_dir: Path
    tokenizer_path: Path | None
    """The SentencePiece model; None for the byte260 vocabulary (``tokenizer_kind``), which has no file."""
    train_files: list[Path]
    val_files: list[Path]
    val_byte_files: list[Path]
    """One byte sidecar per val shard, or empty when the dataset has none."""
    vocab_size: int | None = None
    """The vocabulary the shards were checked against (``resolve_data``'s argument)."""
    text_transform: str = "identity"
    """The manifest's ``text_transform`` (``caseops_v1`` for a CaseOps dataset; official exports: identity)."""
    manifest: dict[str, Any] | None = None
    """``data_dir/manifest.json`` as read (None when there is none)."""
    tokenizer_kind: str = "sentencepiece"
    """``sentencepiece`` (``tokenizer_path``) or ``byte260`` (:data:`pgolf.data.tokenizer.BYTE260_SPEC`)."""

    @property
    def tokenizer_label(self) -> str:
        """What the run log names as its tokenizer: the model's path, or ``byte260``."""
        return str(self.tokenizer_path) if self.tokenizer_path is not None else self.tokenizer_kind


def resolve_data(data_cfg: DataConfig, vocab_size: int) -> DataSpec:
    """Locate and check the dataset of ``data_cfg``.

    ``data_cfg.path`` empty → the embedded corpus (built at first use; its byte260 build when
    ``data_cfg.tokenizer`` is ``byte260``); ``data_cfg.tokenizer`` empty → the byte260 vocabulary when the
    directory's manifest says so (``pgolf data build --tokenizer byte260``), else ``tokenizer.model`` in the
    data directory; ``byte260`` → the byte vocabulary (no file; e.g. the challenge's own
    ``fineweb10B_byte260`` export). DataError for a missing or empty directory, missing shards, a malformed
    shard header, missing/mismatched byte sidecars, a missing tokenizer, one whose vocabulary is not
    ``vocab_size``, or a tokenizer that is not the one the manifest built the shards with.
    """
    from pgolf.data.tokenizer import BYTE260, BYTE260_VOCAB, check_vocab, is_byte260, load_tokenizer

    if data_cfg.path:
        data_dir = Path(data_cfg.path).expanduser()
    else:
        from pgolf.data.embedded import embedded_data_dir

        data_dir = embedded_data_dir(tokenizer=BYTE260) if is_byte260(data_cfg.tokenizer) else embedded_data_dir()
    if not data_dir.exists():
        raise DataError(f"{data_dir}: data directory does not exist (build one with `pgolf data build` or `pgolf data fetch`)")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data path is not a directory")
    if not any(data_dir.iterdir()):
        raise DataError(f"{data_dir}: data directory is empty (build one with `pgolf data build` or `pgolf data fetch`)")
    train = list_shards(data_dir, "train")
    val = list_shards(data_dir, "val")
    if not train:
        raise DataError(f"{data_dir}: no train shards (fineweb_train_*.bin)")
    if not val:
        raise DataError(f"{data_dir}: no validation shards (fineweb_val_*.bin)")
    sidecars = list_byte_sidecars(data_dir)
    if sidecars:
        expected = [sidecar_path(v, sidecar_style(sidecars[0].name) or "pgolf") for v in val]
        if sidecars != expected:
            missing = sorted(set(expected) - set(sidecars)) or sorted(set(sidecars) - set(expected))
            raise DataError(f"{missing[0]}: byte sidecars do not match the val shards one to one")
    for f in train:
        read_shard_header(f)
    for i, v in enumerate(val):
        n = read_shard_header(v)
        if sidecars and (m := read_byte_sidecar_header(sidecars[i])) != n:
            raise DataError(f"{sidecars[i]}: byte sidecar has {m} entries but its val shard has {n} tokens")

    manifest = _manifest(data_dir)
    built = (manifest or {}).get("tokenizer")
    built_bytes = isinstance(built, dict) and built.get("kind") == BYTE260
    kind = BYTE260 if is_byte260(data_cfg.tokenizer) or (not data_cfg.tokenizer and built_bytes) else "sentencepiece"
    tok: Path | None = None
    if kind == BYTE260:
        if manifest is not None and not built_bytes and isinstance(built, dict):
            raise DataError(f"{data_dir / 'manifest.json'}: these shards were built with a SentencePiece tokenizer, "
                            "not byte260 (data.tokenizer)")
        if vocab_size != BYTE260_VOCAB:
            raise DataError(f"the byte260 vocabulary has {BYTE260_VOCAB} ids but model.vocab_size is {vocab_size}")
    else:
        if built_bytes:
            raise DataError(f"{data_dir / 'manifest.json'}: these shards hold bytes (byte260), not the ids of "
                            f"{data_cfg.tokenizer} (leave data.tokenizer empty or set it to byte260)")
        tok = Path(data_cfg.tokenizer).expanduser() if data_cfg.tokenizer else data_dir / "tokenizer.model"
        if not tok.exists():
            raise DataError(f"{tok}: tokenizer not found (set data.tokenizer)")
        check_vocab(load_tokenizer(tok), vocab_size, tok)
    transform = (manifest or {}).get("text_transform", "identity")
    if transform not in ("identity", "caseops_v1"):
        raise DataError(f"{data_dir / 'manifest.json'}: unknown text_transform {transform!r}")
    if transform != "identity" and not sidecars:
        raise DataError(f"{data_dir}: a {transform} dataset needs its validation byte sidecar (original bytes) to be scored")
    return DataSpec(data_dir, tok, train, val, sidecars, vocab_size, transform, manifest, kind)


def _manifest(data_dir: Path) -> dict[str, Any] | None:
    """``data_dir/manifest.json`` (None when absent; a DataError when unreadable or not an object)."""
    return fileio.read_json_object(data_dir / "manifest.json", "manifest")


def train_loader(cfg: TrainConfig, *args: Any, **kwargs: Any) -> DistributedTokenLoader:
    """The training loader ``cfg.loader`` names, built with :class:`DistributedTokenLoader`'s arguments (files, rank,
    world_size, device, vocab_size, overlap); the sampled ones imported behind their switch."""
    if cfg.loader == "stream":
        return DistributedTokenLoader(*args, **kwargs)
    from pgolf.data.sampled import SampledLoader

    return SampledLoader(*args, **kwargs, kind=cfg.loader, seed=cfg.seed)  # type: ignore[return-value]


class DistributedTokenLoader:
    """The baseline's loader: one wrapping stream over ``files``, a disjoint span per rank."""

    def __init__(
        self,
        files: Sequence[PathLike],
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        vocab_size: int | None = None,
        overlap: OverlapChecker | None = None,
    ) -> None:
        if not files:
            raise DataError("no train shards to load")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.files = [Path(f) for f in files]
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        self.overlap = overlap
        self.file_idx = 0
        self.pos = 0
        self._tokens: np.ndarray | None = None  # current shard, loaded on first use

    def _shard(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = read_shard(self.files[self.file_idx], self.vocab_size)
            if self.overlap is not None:
                self.overlap.check(self.file_idx, self._tokens)
        return self._tokens

    def _take(self, n: int) -> np.ndarray:
        """The next ``n`` tokens of the stream."""
        parts: list[np.ndarray] = []
        empty_in_a_row = 0
        while n > 0:
            tokens = self._shard()
            avail = tokens.size - self.pos
            if avail <= 0:
                empty_in_a_row = empty_in_a_row + 1 if tokens.size == 0 else 0
                if empty_in_a_row > len(self.files):
                    raise DataError(f"{self.files[0].parent}: every train shard is empty")
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.pos = 0
                self._tokens = None
                continue
            k = min(n, avail)
            parts.append(tokens[self.pos : self.pos + k])
            self.pos += k
            n -= k
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` for this rank's next micro-step: int64 ``[local_tokens/seq_len, seq_len]``."""
        local = global_tokens // (self.world_size * grad_accum)
        if local < seq_len or local % seq_len:
            raise ConfigError(
                f"batch of {global_tokens} tokens over {self.world_size} rank(s) × {grad_accum} micro-step(s) gives "
                f"{local} tokens per micro-step, not a positive multiple of seq_len={seq_len}"
            )
        span = local + 1
        chunk = self._take(span * self.world_size)
        mine = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        x = mine[:-1].reshape(-1, seq_len)
        y = mine[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able stream position: shard index and offset in it (+ shard names, checked on load)."""
        return {"file_idx": self.file_idx, "pos": self.pos, "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream exactly where :meth:`state_dict` was taken."""
        names = [f.name for f in self.files]
        if "files" in state and list(state["files"]) != names:
            raise DataError(
                f"{self.files[0].parent}: the loader state was saved with {len(state['files'])} train shards "
                f"({', '.join(state['files'][:2])}…) but these are {len(names)} ({', '.join(names[:2])}…)"
            )
        idx, pos = int(state["file_idx"]), int(state["pos"])
        if not 0 <= idx < len(self.files):
            raise DataError(f"loader state shard index {idx} outside 0..{len(self.files) - 1}")
        self.file_idx, self.pos, self._tokens = idx, pos, None
        if pos > self._shard().size:
            raise DataError(f"{self.files[idx]}: loader state offset {pos} is past its {self._shard().size} tokens")


@dataclass
class ValData:
    """The validation stream: token ids (uint16) and, if the dataset has a byte sidecar, each
    token's original UTF-8 byte count (uint16, 0 at BOS), aligned with ``tokens``."""

    tokens: np.ndarray
    raw_bytes: np.ndarray | None


def load_validation(spec: DataSpec, vocab_size: int | None = None, max_tokens: int = 0) -> ValData:
    """Concatenate the val shards (and their byte sidecars) of ``spec``; at most ``max_tokens``
    tokens if > 0. Ids are checked against ``vocab_size`` (default ``spec.vocab_size``)."""
    vocab = vocab_size if vocab_size is not None else spec.vocab_size
    if spec.val_byte_files and len(spec.val_byte_files) != len(spec.val_files):
        raise DataError(
            f"{spec.data_dir}: {len(spec.val_byte_files)} byte sidecars for {len(spec.val_files)} val shards"
        )
    toks: list[np.ndarray] = []
    raw: list[np.ndarray] = []
    have = 0
    for i, f in enumerate(spec.val_files):
        t = read_shard(f, vocab)
        toks.append(t)
        if spec.val_byte_files:
            b = read_byte_sidecar(spec.val_byte_files[i], expected_tokens=t.size)
            if (nz := np.flatnonzero(b[t == BOS_ID])).size:  # BOS carries 0 bytes: anything else is not this shard's sidecar
                pos = int(np.flatnonzero(t == BOS_ID)[nz[0]])
                raise DataError(f"{spec.val_byte_files[i]}: {int(b[pos])} bytes at token {pos}, a BOS of {f.name} "
                                "(BOS counts 0): not the byte sidecar of this val shard")
            raw.append(b)
        have += t.size
        if 0 < max_tokens <= have:
            break
    tokens = np.concatenate(toks) if len(toks) > 1 else toks[0] if toks else np.zeros(0, np.uint16)
    raw_bytes = (np.concatenate(raw) if len(raw) > 1 else raw[0]) if raw else None
    if max_tokens > 0:
        tokens = tokens[:max_tokens]
        raw_bytes = raw_bytes[:max_tokens] if raw_bytes is not None else None
    if tokens.size == 0:
        raise DataError(f"{spec.data_dir}: the validation shards hold no tokens")
    return ValData(tokens, raw_bytes)
