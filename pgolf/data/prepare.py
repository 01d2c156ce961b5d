"""What a run reads before it trains or evaluates: the resolved data spec, the validation stream and the
challenge's byte tables (shared by training, evaluation and export, so none imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass

from pgolf.config import RunConfig
from pgolf.data.bytetables import ByteTables, build_byte_tables
from pgolf.data.loader import DataSpec, ValData, load_validation, resolve_data
from pgolf.data.tokenizer import check_vocab, load_tokenizer


@dataclass
class RunData:
    """Everything a run reads: the data spec, the validation stream and the byte tables."""

    spec: DataSpec
    val: ValData
    tables: ByteTables

    @property
    def score(self) -> str:
        """Which bytes val_bpb divides by: ``table`` (the challenge's LUTs) or ``sidecar`` (original
        bytes; always for a transformed dataset such as CaseOps, whose pieces are not the text)."""
        return "table" if self.spec.text_transform == "identity" else "sidecar"


def prepare_data(cfg: RunConfig) -> RunData:
    """Resolve ``cfg.data`` (building the embedded corpus on first use), check the tokenizer against
    ``cfg.model.vocab_size`` and load the validation stream (≤ ``data.val_max_tokens``) and byte tables."""
    spec = resolve_data(cfg.data, cfg.model.vocab_size)
    sp = load_tokenizer(spec.tokenizer_path)
    check_vocab(sp, cfg.model.vocab_size)
    val = load_validation(spec, cfg.model.vocab_size, max_tokens=cfg.data.val_max_tokens)
    return RunData(spec=spec, val=val, tables=build_byte_tables(sp, cfg.model.vocab_size))
