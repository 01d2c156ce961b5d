"""pgolf.artifact.budget: exact byte arithmetic against the decimal cap, table totals, the one-line
BudgetError, and what counts as code (the configuration's bundle, or inside a bundle its own file)."""

from pathlib import Path

import pytest

import pgolf
from pgolf.artifact.budget import (
    CAP_BYTES,
    ByteReport,
    TensorRow,
    check_budget,
    code_bytes,
    format_table,
)
from pgolf.errors import BudgetError, PgolfError

ROWS = [
    TensorRow("tok_emb.weight", (1024, 512), "int8_row", 2_097_152, 526_336, 400_001),
    TensorRow("blocks.0.attn_scale", (512,), "fp32", 2_048, 2_048, 1_100),
    TensorRow("skip_weights", (4, 512), "fp32", 8_192, 8_192, 5_000),
    TensorRow("step", (), "raw", 8, 8, 3),
]


def test_arithmetic_and_cap_is_decimal():
    assert CAP_BYTES == 16_000_000
    r = ByteReport(model_bytes=15_815_847, code_bytes=47_642)  # the baseline's logged numbers
    assert r.artifact_bytes == 15_863_489 and r.fits and r.headroom == 136_511
    at_cap = ByteReport(model_bytes=15_999_000, code_bytes=1_000)
    assert at_cap.fits and at_cap.headroom == 0
    over = ByteReport(model_bytes=15_999_000, code_bytes=1_001)
    assert not over.fits and over.headroom == -1
    assert ByteReport(10, 5, cap=14).headroom == -1
    r = ByteReport(model_bytes=407_000, code_bytes=1, rows=ROWS)
    assert r.overhead_bytes == 407_000 - 406_104


def test_check_budget_message():
    check_budget(ByteReport(model_bytes=15_999_000, code_bytes=1_000))  # exactly at the cap: fine
    with pytest.raises(BudgetError) as e:
        check_budget(ByteReport(model_bytes=15_950_000, code_bytes=50_001, rows=ROWS))
    assert str(e.value) == (
        "artifact is 16,000,001 bytes, over the 16,000,000-byte cap by 1 "
        "(model 15,950,000 + code 50,001); per-tensor table above"
    )
    assert isinstance(e.value, PgolfError) and e.value.exit_code == 3
    with pytest.raises(BudgetError, match=r"^artifact is 1,500 bytes, over the 1,000-byte cap by 500 \(model 1,000 \+ code 500\)"):
        check_budget(ByteReport(1_000, 500, cap=1_000))


def _num(s: str) -> int:
    return int(s.replace(",", "").rstrip("%"))


def test_format_table_totals_and_alignment():
    r = ByteReport(model_bytes=407_000, code_bytes=50_000, rows=ROWS)
    text = format_table(r)
    lines = text.splitlines()
    head, rule = lines[0], lines[1]
    assert head.split() == ["tensor", "shape", "scheme", "raw", "quantized", "compressed", "share"]
    assert set(rule) == {"-"} and len(rule) == len(head)
    body = lines[2 : 2 + len(ROWS)]
    # numbers right-aligned: every body row ends in the share column at the header's width
    for line, row in zip(body, ROWS, strict=True):
        assert line.startswith(row.name) and len(line) == len(head)
        cells = line.split()
        assert [_num(c) for c in cells[-4:-1]] == [row.raw_bytes, row.quant_bytes, row.compressed_bytes]
    assert "1024x512" in body[0] and "scalar" in body[3]
    total = lines[3 + len(ROWS)]
    assert total.startswith("total (4 tensors)")
    cells = total.split()
    assert _num(cells[-4]) == sum(x.raw_bytes for x in ROWS)
    assert _num(cells[-3]) == sum(x.quant_bytes for x in ROWS)
    assert _num(cells[-2]) == sum(x.compressed_bytes for x in ROWS) == 406_104
    summary = {line.rsplit("  ", 1)[0].strip(): _num(line.split()[-1]) for line in lines[5 + len(ROWS) :]}
    assert summary == {
        "container header + checksums": 896,
        "model (artifact file)": 407_000,
        "code": 50_000,
        "artifact (model + code)": 457_000,
        "cap": 16_000_000,
        "headroom": 15_543_000,
    }
    widths = {len(line) for line in lines[5 + len(ROWS) :]}
    assert len(widths) == 1  # summary values aligned
    over = format_table(ByteReport(model_bytes=16_000_000, code_bytes=7, rows=ROWS))
    assert over.splitlines()[-1].split()[-1] == "7" and "OVER BUDGET by" in over


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_code_bytes_is_the_shipped_bundle_of_the_configuration():
    from pgolf.bundler import render
    from pgolf.config import RunConfig, apply_overrides

    cfg = RunConfig()
    assert code_bytes() == code_bytes(cfg) == len(render(cfg, compact=True).data)
    readable = apply_overrides(cfg, ["export.code_form=readable"])
    assert code_bytes(readable) == len(render(readable, compact=False).data) > 4 * code_bytes(cfg)
    # the whole package source, which pgolf charged before the bundle existed, is far more
    root = Path(pgolf.__file__).resolve().parent
    assert sum(len(p.read_bytes()) for p in root.rglob("*.py")) > code_bytes(readable) > code_bytes(cfg)


def test_inside_a_bundle_code_bytes_is_the_bundle_file(tmp_path, monkeypatch):
    f = tmp_path / "train_gpt.py"
    f.write_bytes(b"x" * 12_345)
    monkeypatch.setattr(pgolf, "__bundle_file__", str(f), raising=False)  # what a bundle's importer sets
    assert code_bytes() == 12_345
    from pgolf.config import RunConfig, apply_overrides

    assert code_bytes(apply_overrides(RunConfig(), ["export.scheme=budget"])) == 12_345
