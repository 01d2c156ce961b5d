"""Typed configuration for every stage of pgolf.

A run is described by one :class:`RunConfig` made of sections (``data``, ``model``, ``optim``,
``train``, ``export``, ``eval``). Named recipes live in :mod:`pgolf.presets` as functions that
return a ``RunConfig``; any field can be overridden from the command line with
``--set section.key=value`` (see :func:`apply_overrides`). Unknown keys and values that do not
parse are a :class:`~pgolf.errors.ConfigError`.

Defaults are the challenge's naive baseline (``train_gpt.py`` at the root of
openai/parameter-golf, CATALOGUE §1.3–§1.7). Every technique added later is one field, off by
default, documented with its source record.

One module per section, each holding the section's schema and its sub-sections: :mod:`~pgolf.config.data`,
:mod:`~pgolf.config.model` (``model.attn``, ``model.embed``, ``model.recur``, ``model.ssm``),
:mod:`~pgolf.config.optim`, :mod:`~pgolf.config.train` (``train.ema``, ``train.swa``, ``train.qat``),
:mod:`~pgolf.config.export`, :mod:`~pgolf.config.eval` (``eval.sliding``, ``eval.ttt``, ``eval.mix``, the method
names); :mod:`~pgolf.config.run` the whole :class:`RunConfig`; :mod:`~pgolf.config.overrides` the coercion and
``--set`` engine, which knows no section; :mod:`~pgolf.config.docs` the docstring reader of ``pgolf info``, never on
the training path. Every public name is importable from ``pgolf.config``. The package imports nothing of pgolf
but :mod:`pgolf.errors` (tests/test_layering.py).
"""

from __future__ import annotations

from typing import Any

# re-exported: every public name of each module (a star import costs a bundle fewer bytes than a list, and
# no __all__: its strings would keep field_docs in a bundle)
from pgolf.config.data import *  # noqa: F403
from pgolf.config.eval import *  # noqa: F403
from pgolf.config.export import *  # noqa: F403
from pgolf.config.model import *  # noqa: F403
from pgolf.config.optim import *  # noqa: F403
from pgolf.config.overrides import *  # noqa: F403
from pgolf.config.overrides import _build, _coerce  # noqa: F401 (the tests call them)
from pgolf.config.run import *  # noqa: F403
from pgolf.config.train import *  # noqa: F403


def field_docs(cls: type | None = None, prefix: str = "") -> dict[str, str]:
    """Dotted path → the field's docstring, for ``pgolf info`` (:func:`pgolf.config.docs.field_docs`, imported
    on use so that the training path, and so a bundle, never carries the source reader)."""
    from pgolf.config import docs

    return docs.field_docs(cls, prefix)  # type: ignore[arg-type]


def field_types(cls: type | None = None, prefix: str = "") -> dict[str, Any]:
    """Dotted path → field type, for every leaf field (:func:`pgolf.config.docs.field_types`)."""
    from pgolf.config import docs

    return docs.field_types(cls, prefix)  # type: ignore[arg-type]
