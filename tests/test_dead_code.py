"""No dead code in pgolf: vulture (a static dead-code finder) over the package, with the tests and bench
scripts as its users and ``tests/vulture_whitelist.py`` for what is used where vulture cannot see (names read
from the source, registered by decorators, fixed by a library's signature). A new unused function, class,
method, attribute or variable in pgolf fails here: remove it, or add it to the whitelist with why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vulture")

REPO = Path(__file__).resolve().parent.parent


def test_vulture_finds_no_dead_code_in_pgolf():
    r = subprocess.run([sys.executable, "-m", "vulture", "pgolf", "tests", "bench", "tests/vulture_whitelist.py",
                        "--min-confidence", "60"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 3), r.stderr  # 3: vulture found something (listed on stdout)
    dead = [line for line in r.stdout.splitlines() if line.startswith("pgolf/")]
    assert not dead, "dead code (remove it, or whitelist it with why in tests/vulture_whitelist.py):\n" + "\n".join(dead)


def test_vulture_would_catch_a_dead_function(tmp_path):
    """The check has teeth: an unreferenced function in a package is reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("def used():\n    return 1\n\n\ndef never_called():\n    return 2\n\n\nprint(used())\n")
    r = subprocess.run([sys.executable, "-m", "vulture", "pkg", "--min-confidence", "60"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert "never_called" in r.stdout and "'used'" not in r.stdout
