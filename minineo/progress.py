"""Progress bars for anything that can take more than ~2 s: rich, on stderr, and only when stderr is a
terminal (so never in tests, pipes or redirected output).

    with progress.task("mean |cos| of W_E", total=n_blocks) as advance:
        for ...:
            advance()

    for layer in progress.track(range(n_layers), "patching layers"):
        ...

Tasks nest: an inner task opened while an outer one runs is a second line of the same display (rich
allows one live display per console), and each line disappears when its task ends.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.text import Text
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

_display: Progress | None = None  # the live display while any task is open
_open = 0


class _Count(MofNCompleteColumn):
    """done/total, or nothing for a task without a total (never a misleading `0/?`)."""

    def render(self, task):
        return Text("") if task.total is None else super().render(task)


def _start() -> Progress:
    console = Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _Count(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=True, disable=not console.is_terminal)


@contextmanager
def task(description: str, total: float | None = None, delay: float = 0.0) -> Iterator[Callable[[float], None]]:
    """A progress line saying what runs; yields `advance(steps=1)`. total=None: a spinner without a bar.

    `delay` (s): the display appears only once the task has run that long (quick work shows nothing).
    """
    global _display, _open
    timer = None
    if _display is None:
        _display = _start()
        if delay > 0 and not _display.disable:
            timer = threading.Timer(delay, _display.start)
            timer.daemon = True
            timer.start()
        else:
            _display.start()
    display = _display
    _open += 1
    task_id = display.add_task(description, total=total)
    try:
        yield lambda steps=1: display.advance(task_id, steps)
    finally:
        if timer is not None:
            timer.cancel()
        display.remove_task(task_id)
        _open -= 1
        if _open == 0:
            display.stop()
            _display = None


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` with a progress line (total: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as advance:
        for item in items:
            yield item
            advance()
