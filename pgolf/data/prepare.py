"""What a run reads before it trains or evaluates: the resolved data spec, the validation stream and the
challenge's byte tables (shared by training, evaluation and export, so none imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pgolf.config import RunConfig
from pgolf.data.bytetables import ByteTables, build_byte_tables, byte260_tables
from pgolf.data.loader import DataSpec, ValData, load_validation, resolve_data
from pgolf.data.shards import read_shard_header
from pgolf.data.tokenizer import check_vocab, load_tokenizer
from pgolf.errors import DataError

if TYPE_CHECKING:  # imported where used: a bundle that never checks (official data) can leave it out
    from pgolf.data.overlap import OverlapChecker
    from pgolf.data.provenance import ValFingerprints


@dataclass
class RunData:
    """Everything a run reads: the data spec, the validation stream and the byte tables."""

    spec: DataSpec
    val: ValData
    tables: ByteTables
    _fingerprints: ValFingerprints | None = field(default=None, repr=False)

    @property
    def score(self) -> str:
        """Which bytes val_bpb divides by: ``table`` (the challenge's LUTs) or ``sidecar`` (original
        bytes; always for a transformed dataset such as CaseOps, whose pieces are not the text)."""
        return "table" if self.spec.text_transform == "identity" else "sidecar"

    def val_fingerprints(self) -> ValFingerprints:
        """Fingerprints of the validation documents, from the val shards themselves (all of them, even
        when ``val`` is cut to ``data.val_max_tokens``); DataError if the manifest records others."""
        from pgolf.data.provenance import ValFingerprints

        if self._fingerprints is None:
            spec = self.spec
            full = self.val if self.val.tokens.size == sum(read_shard_header(f) for f in spec.val_files) else \
                load_validation(spec, spec.vocab_size)
            bos = int((spec.manifest or {}).get("bos_id", 1))
            fp = ValFingerprints.from_tokens(full.tokens, bos)
            entry = (spec.manifest or {}).get("validation_fingerprints")
            if entry is not None:
                where = str(spec.data_dir / "manifest.json")
                i = ValFingerprints.from_manifest(entry, where).mismatch(fp)
                if i is not None:
                    raise DataError(f"{where}: validation document {i} of the val shards differs from the one the "
                                    "manifest fingerprinted: these are not the val shards this dataset was built with")
            self._fingerprints = fp
        return self._fingerprints

    def overlap_checker(self) -> OverlapChecker | None:
        """The train-shard check the loader runs (``pgolf.data.overlap``): strict for a dataset whose
        manifest holds pgolf's validation fingerprints, ``FOREIGN_TOLERANCE`` for one without (another
        tool's directory, an older pgolf build); None for the official export fetched by ``pgolf data
        fetch``, whose fixed split is the challenge's own definition."""
        from pgolf.data.overlap import FOREIGN_TOLERANCE, OverlapChecker

        manifest = self.spec.manifest or {}
        if manifest.get("source") == "official":
            return None
        strict = "validation_fingerprints" in manifest
        return OverlapChecker(self.val_fingerprints(), self.spec.train_files, 0.0 if strict else FOREIGN_TOLERANCE)


def prepare_data(cfg: RunConfig) -> RunData:
    """Resolve ``cfg.data`` (building the embedded corpus on first use), check the tokenizer against
    ``cfg.model.vocab_size`` and load the validation stream (≤ ``data.val_max_tokens``) and byte tables
    (the byte260 vocabulary's own: one raw byte per byte id, :func:`~pgolf.data.bytetables.byte260_tables`)."""
    spec = resolve_data(cfg.data, cfg.model.vocab_size)
    if spec.tokenizer_path is None:  # byte260: no model file
        tables = byte260_tables(cfg.model.vocab_size)
    else:
        sp = load_tokenizer(spec.tokenizer_path)
        check_vocab(sp, cfg.model.vocab_size)
        tables = build_byte_tables(sp, cfg.model.vocab_size)
    val = load_validation(spec, cfg.model.vocab_size, max_tokens=cfg.data.val_max_tokens)
    return RunData(spec=spec, val=val, tables=tables)
