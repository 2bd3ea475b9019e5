"""Old import paths: the modules the layout moved (commit c66d563, "layout by job") stay importable by their old names.

`from minineo.harvest import harvest` imports `minineo.data.harvest` itself (the same module object, not a copy),
with a DeprecationWarning naming the new path. A meta-path finder answers only for the names in MOVED (and their
submodules: `minineo.weights.gpt2` is `minineo.checkpoints.weights.gpt2`); every other import is left to Python.
This module imports nothing of minineo at import time, so the layering is unchanged.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old module -> new module: every rename in `git log --diff-filter=R` of minineo/ (the old flat layout)
MOVED = {
    "minineo.attention": "minineo.forward.attention",
    "minineo.blocks": "minineo.forward.blocks",
    "minineo.functional": "minineo.forward.functional",
    "minineo.generate": "minineo.forward.generate",
    "minineo.kv_cache": "minineo.forward.kv_cache",
    "minineo.model": "minineo.forward.model",
    "minineo.cache": "minineo.record.cache",
    "minineo.lazy_sites": "minineo.record.lazy_sites",
    "minineo.recording": "minineo.record.recording",
    "minineo.sites": "minineo.record.sites",
    "minineo.hub": "minineo.checkpoints.hub",
    "minineo.loading": "minineo.checkpoints.loading",
    "minineo.tokenizer": "minineo.checkpoints.tokenizer",
    "minineo.tokens": "minineo.checkpoints.tokens",
    "minineo.weights": "minineo.checkpoints.weights",
    "minineo.corpus": "minineo.data.corpus",
    "minineo.harvest": "minineo.data.harvest",
    "minineo.shards": "minineo.data.shards",
    "minineo.plots": "minineo.cli.plots",
    "minineo.cli_analysis": "minineo.cli.analysis",
    "minineo.cli_harvest": "minineo.cli.harvest",
    "minineo.cli_patch": "minineo.cli.patch",
    "minineo.cli_tuned_lens": "minineo.cli.tuned_lens",
}


def new_name(old: str) -> str | None:
    """The module's path today for an old path (or a submodule of one), else None."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the new module itself (sys.modules[old] is sys.modules[new])."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # importlib set the alias's spec on the real module: give it back its own


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        warnings.warn(f"{fullname} moved to {target_name}; import it from there (the old path is an alias)",
                      DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name))


def install() -> None:
    """Put the finder first on sys.meta_path (once): before the path finder, which would otherwise load a second
    copy of a moved package's submodules from the alias's __path__."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
