"""Imports point one way, down (DESIGN "Seams": data → model → optim/train; quant below artifact; the
export driver above both; eval never imports train), read from the source with ``ast`` so function-level
imports count too, and no module-level import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pgolf

ROOT = Path(pgolf.__file__).parent
CONFIG = {"pgolf.config", *(f"pgolf.config.{p.stem}" for p in (ROOT / "config").glob("[a-z]*.py"))}
"""The config package: a leaf made of modules (its sections, the override engine, the docstring reader)."""
LEAF = {"pgolf", "pgolf.switch", "pgolf.tracks", "pgolf.errors", "pgolf.fileio", "pgolf.dist", "pgolf.logformat", "pgolf.roles", "pgolf.precision",
        "pgolf.compile", *CONFIG}

# layer → the layers it may import (besides itself and the leaf modules)
ALLOWED: dict[str, set[str]] = {
    "data": set(),
    "model": set(),
    "optim": {"model"},
    "quant": {"model"},
    "artifact": {"quant"},
    "eval": {"data", "model"},
    "train": {"data", "model", "optim", "quant", "eval"},
    "export": {"data", "model", "quant", "artifact"},
    "presets": set(),
    "runner": {"data", "model", "optim", "quant", "artifact", "eval", "train", "export", "presets"},
    "preflight": {"model", "optim", "export", "eval"},  # eval: the mixer's counting, timed for its prediction
    "autosize": {"model", "export", "preflight"},
    # the bundle's entry (train_gpt.py's __main__): challenge env vars → config → runner
    "standalone": {"data", "model", "optim", "quant", "artifact", "eval", "train", "export", "runner"},
}
ALLOWED["runner"] |= {"autosize"}
# the bundler reads the package's sources (never bundled itself); the byte accounting charges its bundle, and a
# switch condition may name the export scheme's attributes
ALLOWED["bundler"] = {"export"}
ALLOWED["artifact"] |= {"bundler"}
ALLOWED["identity"] = {"data"}  # "the same experiment" (config fields + dataset fingerprint + code)
TRAINING_PATH = set(ALLOWED)
FORBIDDEN_FROM_TRAINING_PATH = {"submit", "track", "cli", "commands", "__main__"}


def layer(mod: str) -> str | None:
    if mod in LEAF:
        return None
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pgolf")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("pgolf"):
                continue
            for a in node.names:  # `from pgolf.quant import grid` imports the submodule
                sub = f"{base}.{a.name}"
                out.add(sub if (ROOT.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (ROOT.parent / sub.replace(".", "/")).is_dir() else base)
    return out


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def test_the_reader_sees_function_level_and_submodule_imports(tmp_path: Path) -> None:
    p = tmp_path / "probe.py"
    p.write_text("from pgolf.quant import grid\n\ndef f():\n    from pgolf.artifact.format import x\n")
    assert imports_of(p) == {"pgolf.quant.grid", "pgolf.artifact.format"}
    assert imports_of(p, top_level_only=True) == {"pgolf.quant.grid"}


def test_imports_point_down() -> None:
    bad = []
    for mod, path in all_modules().items():
        src = layer(mod)
        if src is None or src not in ALLOWED:
            continue
        for dep in imports_of(path):
            dst = layer(dep)
            if dst is None or dst == src:
                continue
            if dst not in ALLOWED[src]:
                bad.append(f"{mod} imports {dep} ({src} → {dst})")
    assert not bad, "\n".join(bad)


def test_every_layer_is_declared() -> None:
    """A new package is either on the training path (with its allowed imports above) or a top layer."""
    layers = {layer(m) for m in all_modules()} - {None}
    assert layers <= set(ALLOWED) | FORBIDDEN_FROM_TRAINING_PATH, layers - set(ALLOWED) - FORBIDDEN_FROM_TRAINING_PATH


def test_training_path_never_imports_submission_or_cli() -> None:
    bad = [f"{m} imports {d}" for m, p in all_modules().items() if layer(m) in TRAINING_PATH
           for d in imports_of(p) if layer(d) in FORBIDDEN_FROM_TRAINING_PATH]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    mods = all_modules()
    graph = {m: {d for d in imports_of(p) if d in mods and d != m} for m, p in mods.items()}
    # a package's __init__ importing its own submodules is not a cycle of the kind that matters
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_config_is_a_leaf() -> None:
    """Every layer may import the configuration, so it imports nothing of pgolf but its own modules and
    ``pgolf.errors`` (function-level imports included)."""
    assert {"pgolf.config.model", "pgolf.config.overrides", "pgolf.config.run"} <= CONFIG
    mods = all_modules()
    bad = [f"{m} imports {d}" for m in sorted(CONFIG) for d in sorted(imports_of(mods[m]))
           if d not in CONFIG and d != "pgolf.errors"]
    assert not bad, "\n".join(bad)
