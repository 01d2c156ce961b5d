"""The settings a submission ran with, read without running it: the log's header, else the README's command
(``TTT_ENABLED=0 torchrun …``), else the default in the code (``x = int(os.environ.get("X", 1))``, the
records' ``Hyperparameters``). The review uses them to tell code that ran from code that was switched off.
"""

from __future__ import annotations

import ast
import re

from pgolf.submit import review_flow as rf

FALSY = {"0", "0.0", "false", "none", "", "no", "off"}


def code_defaults(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """``name = T(os.environ.get("ENV", default))`` → {name: (ENV, default)} (the records' Hyperparameters)."""
    out: dict[str, tuple[str, str]] = {}
    for n in ast.walk(tree):
        if not isinstance(n, ast.Assign) or len(n.targets) != 1:
            continue
        key = rf._ident(rf._dotted(n.targets[0]) or "")
        for c in ast.walk(n.value):
            if isinstance(c, ast.Call) and (rf._dotted(c.func) or "").endswith("environ.get") and c.args and \
                    isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str) and key:
                default = c.args[1] if len(c.args) > 1 else None
                dv = default.value if isinstance(default, ast.Constant) else None
                out.setdefault(key.lower(), (c.args[0].value, "" if dv is None else str(dv)))
                break
    return out


def effective_settings(trees: dict[str, ast.Module], readme: str, header: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The value each setting had in the logged runs, with its source: the log's header, else an
    ``ENV=value`` in the README's run command, else the code's default."""
    env = dict(re.findall(r"\b([A-Z][A-Z0-9_]{2,})=([^\s\\`'\"]*)", readme))
    out: dict[str, tuple[str, str]] = {}
    for tree in trees.values():
        for key, (envname, default) in code_defaults(tree).items():
            out[key] = (env[envname], "README") if envname in env else (default, "code default")
    for k, v in header.items():
        out[k.lower()] = (v, "log")
    return out
