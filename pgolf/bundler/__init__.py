"""The single-file ``train_gpt.py`` bundle: which modules a configuration needs (:mod:`.select`, reading the
switches declared beside the code, :mod:`.switches`), their minified (:mod:`.minify`) and switch-stubbed
(:mod:`.prune`) sources, and the file in its two forms with its bytes (:mod:`.render`).

Never bundled itself; imported by the byte accounting (:func:`pgolf.artifact.budget.code_bytes`) and by
``pgolf bundle`` / ``pgolf submit``.
"""

from pgolf.bundler.script import (
    CODEC,
    CODECS,
    FORMS,
    REQUIRED_PACKAGES,
    Rendered,
    bundle_config,
    check_form,
    render,
    shipped,
    shipped_bytes,
)
from pgolf.bundler.select import (
    ENTRY,
    NEVER,
    Selection,
    dead_definitions,
    module_path,
    optional_modules,
    package_root,
    scan,
    select_modules,
    stubs_for,
    third_party_imports,
)

__all__ = [
    "CODEC", "CODECS", "ENTRY", "FORMS", "NEVER", "REQUIRED_PACKAGES", "Rendered", "Selection", "bundle_config",
    "check_form", "dead_definitions", "module_path", "optional_modules", "package_root", "render", "scan",
    "select_modules", "shipped", "shipped_bytes", "stubs_for", "third_party_imports",
]
