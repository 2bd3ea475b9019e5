"""Old import paths (issue 29 part 9): every module the layout moved still imports by its old name, as the same
module object, with a DeprecationWarning that names the new path.

The oracle for "what moved" is git's own record of the renames (`git log --diff-filter=R`), checked where the
repository's history is at hand; the table in minineo/moved.py is checked against the files on disk everywhere.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import minineo
from minineo import moved

ROOT = Path(minineo.__file__).parent.parent


def test_from_minineo_harvest_import_harvest_works():
    with pytest.warns(DeprecationWarning, match=r"minineo\.data\.harvest"):
        sys.modules.pop("minineo.harvest", None)
        from minineo.harvest import harvest  # noqa: F401  (the line from the issue)
    from minineo.data.harvest import harvest as new
    assert harvest is new


@pytest.mark.parametrize("old,new", sorted(moved.MOVED.items()))
def test_old_path_is_the_new_module(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # the real module keeps its identity
    assert any(new in str(w.message) and issubclass(w.category, DeprecationWarning) for w in caught), \
        [str(w.message) for w in caught]


def test_submodule_of_a_moved_package_is_not_loaded_twice():
    sys.modules.pop("minineo.weights.gpt2", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from minineo.weights import gpt2
        import minineo.weights.export as old_export
    import minineo.checkpoints.weights.export as export
    import minineo.checkpoints.weights.gpt2 as new
    assert gpt2 is new and old_export is export


def test_no_old_path_shadows_a_real_module():
    for old in moved.MOVED:
        relative = Path(*old.split("."))
        assert not (ROOT / relative.with_suffix(".py")).exists() and not (ROOT / relative).is_dir(), old


def test_unknown_module_still_fails_as_python_does():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("minineo.no_such_module")


def _git_renames() -> set[str] | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "--name-status", "--diff-filter=R", "--format="],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    olds = set()
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].startswith("minineo/") and parts[1].endswith(".py"):
            name = parts[1][:-3].replace("/", ".").removesuffix(".__init__")
            if not (ROOT / parts[1]).exists():  # a path that came back later is not an old path
                olds.add(name)
    return olds


def test_every_rename_in_the_history_has_an_alias():
    olds = _git_renames()
    if not olds:
        pytest.skip("no git history here (an sdist or a shallow copy): the table is checked against the disk only")
    missing = sorted(old for old in olds if moved.new_name(old) is None)
    assert not missing, f"moved in git history but not aliased in minineo/moved.py: {missing}"
