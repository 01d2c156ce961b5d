"""A technique's switch, declared once, beside its code.

pgolf ships a configuration as one ``train_gpt.py`` (:mod:`pgolf.bundler`) and the challenge charges its
bytes, so a bundle leaves out what its configuration never runs. What runs when is declared where the
technique is written, never in the bundler:

- a module that only some configurations need says when with a module-level string::

      NEEDED_WHEN = "model.embed.bigram_buckets > 0"

  and is imported only inside the functions that run behind that switch;
- a technique that is a few lines of a shared module is a function or method of its own, called only
  where its switch is on, and decorated::

      @needs("model.attn.gate != 'off'")
      def head_gate(self, y, x): ...

A condition is a Python expression over the configuration's sections (``model``, ``train``, ``optim``,
``eval``, ``export``, ``data``) and ``scheme``, the :class:`pgolf.export.schemes.ExportScheme` that
``export.scheme`` names; :func:`pgolf.bundler.switches.holds` evaluates it. A wrong declaration cannot
compute something else: the bundled stub raises with the condition's text, and the tests trace the
model's calls under each switch against the declarations (tests/test_bundle_prune.py).

:func:`needs` changes nothing at run time; the compact bundle drops the decorator and the import.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def needs(condition: str) -> Callable[[F], F]:
    """Declare that the decorated function runs only when ``condition`` holds (module docstring)."""

    def mark(fn: F) -> F:
        return fn

    return mark
