"""minineo's own messages to the person running it, and the silencing of other libraries' chatter.

    report.warn("3 of the 10 documents ... were skipped")   # `warning: ...`, one paragraph on stderr
    with report.collect() as said:                            # the messages as a list instead (tests, callers
        read_documents(...)                                   # that show them their own way)

Not Python's `warnings`: PYTHONWARNINGS=ignore (or -W ignore, or a notebook's filter) silences those, and a
count of dropped documents or a fallback to a slower path must reach the user whatever their filters.
Every `warning:` minineo prints goes through `warn`.

`quiet_third_parties()` keeps other libraries' log lines and progress bars out of minineo's output (datasets'
bars and logging, transformers' "Loading weights" bar and advisories, torch's C++ and profiler (Kineto) log
lines); the command line calls it before any command runs. Downloads keep huggingface_hub's own bars.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Iterator

_collecting: list[list[str]] = []  # open `collect()` blocks, innermost last


def warn(message: str) -> None:
    """Say `warning: message` on stderr (or add it to the innermost `collect()` block's list)."""
    if _collecting:
        _collecting[-1].append(str(message))
        return
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(Text("warning: ", style="bold yellow") + Text(str(message)),
                                                soft_wrap=True)


@contextlib.contextmanager
def collect() -> Iterator[list[str]]:
    """Within the block, `warn` appends its messages to the yielded list instead of printing them."""
    said: list[str] = []
    _collecting.append(said)
    try:
        yield said
    finally:
        _collecting.remove(said)


# Read by those libraries when they are imported (and, for torch's C++ logging, when it starts).
_QUIET_ENVIRONMENT = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' "Generating train split", "Loading dataset shards" bars
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10's [W ...] lines (e.g. from gloo under torchrun)
    "KINETO_LOG_LEVEL": "5",  # the profiler's "STAGE: ... ActivityProfilerController" lines
}
_QUIET_LOGGERS = ("datasets", "transformers", "huggingface_hub", "filelock", "fsspec", "torch._dynamo",
                  "torch._inductor")


def quiet_third_parties() -> None:
    """Other libraries say nothing on minineo's stdout/stderr but their errors (an environment variable the user
    set keeps its value). Idempotent."""
    for name, value in _QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "datasets" in sys.modules:  # imported before the environment was set
        with contextlib.suppress(Exception):
            sys.modules["datasets"].disable_progress_bars()
            sys.modules["datasets"].utils.logging.set_verbosity_error()
    if "transformers" in sys.modules:
        _quiet_transformers(sys.modules["transformers"])
    elif not any(isinstance(finder, _QuietOnImport) for finder in sys.meta_path):
        # transformers switches its "Loading weights" bar on when imported (it reads no variable of its own for
        # it); a later import is quieted as it completes
        sys.meta_path.insert(0, _QuietOnImport())


def _quiet_transformers(module) -> None:
    with contextlib.suppress(Exception):
        module.utils.logging.disable_progress_bar()
        module.utils.logging.set_verbosity_error()


class _QuietOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `transformers` is imported, its loader runs as usual and the module is then
    quieted (`_quiet_transformers`); the finder then leaves sys.meta_path."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            _quiet_transformers(module)

        spec.loader.exec_module = exec_module
        return spec
