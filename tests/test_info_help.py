"""``pgolf info --help`` names every preset there is, in the order of ``pgolf.presets.PRESETS``."""

from __future__ import annotations

import re

from pgolf.cli import main
from pgolf.presets import PRESETS


def test_info_help_lists_every_preset(capsys) -> None:
    main(["info", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # the help is wrapped to the terminal
    names = re.search(r"Preset name: (.*?)\. \[required\]", text).group(1).split(", ")
    assert names == list(PRESETS) and len(names) > 4 and "record-0427" in names
