"""Names that do not collide: a top-level class name means one thing in pgolf (issue 25 item 5: ``Choice``,
``Rate`` and ``Scored`` each were two different classes). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pgolf

ROOT = Path(pgolf.__file__).parent

KNOWN = {
    "Scheme": {"pgolf/quant/grid.py", "pgolf/quant/lowbit.py"},  # the same shape: lowbit cannot import grid (grid resolves its names)
    "Event": {"pgolf/logformat.py", "pgolf/submit/review_flow.py"},  # not yet renamed (the review's own AST events)
    "Run": {"pgolf/submit/runs.py", "pgolf/track/schema.py"},  # not yet renamed (a run directory vs a registry row)
}


def classes() -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for p in ROOT.rglob("*.py"):
        for node in ast.parse(p.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                out[node.name].add(str(p.relative_to(ROOT.parent)))
    return out


def test_no_two_classes_share_a_name():
    dup = {name: where for name, where in classes().items() if len(where) > 1 and KNOWN.get(name) != where}
    assert not dup, f"one name, several classes (give each its own word): {dup}"


def test_the_renamed_ones_are_one_class_each():
    c = classes()
    for name in ("Choice", "Rate", "Scored", "Candidate", "StepTimeModel", "GroupChoice"):
        assert len(c.get(name, ())) <= 1, (name, c.get(name))
    assert c["GroupChoice"] == {"pgolf/export/solve.py"} and c["Candidate"] == {"pgolf/autosize.py"}
