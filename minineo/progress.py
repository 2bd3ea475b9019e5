"""Progress bars for anything that can take more than ~2 s: rich, on stderr, when stderr is a terminal. Elsewhere
(a notebook, a pipe, a log file, a batch job) a task with a known total that runs longer than LOG_AFTER seconds
writes one plain line every LOG_EVERY seconds instead: what runs, done/total, elapsed and the time left (so quick
work, and the tests, print nothing).

    with progress.task("mean |cos| of W_E", total=n_blocks) as advance:
        for ...:
            advance()

    for layer in progress.track(range(n_layers), "patching layers"):
        ...

Tasks nest: an inner task opened while an outer one runs is a second line of the same display (rich
allows one live display per console), and each line disappears when its task ends.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.text import Text
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

LOG_AFTER = 30.0  # s: outside a terminal, a task's first plain progress line comes after this long
LOG_EVERY = 30.0  # s: and the next ones this far apart

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


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class _Lines:
    """Plain progress lines on stderr for a task outside a terminal: a daemon thread wakes after LOG_AFTER s, then
    every LOG_EVERY s, and writes `description: done/total (p%), 0:01:05 elapsed, about 0:02:10 left`, read from the
    (disabled) rich display's own task, which counts and times it as it does on a terminal."""

    def __init__(self, display: Progress, task_id):
        self.display, self.task_id, self.stopped = display, task_id, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def line(self) -> str | None:
        task = next((t for t in self.display.tasks if t.id == self.task_id), None)
        if task is None:  # ended while this thread woke
            return None
        done, total, elapsed = task.completed, task.total, task.elapsed or 0.0
        left = elapsed * (total - done) / done if done else None
        count = f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g}"
        eta = f", about {_clock(left)} left" if left is not None else ""
        return f"{task.description}: {count}, {_clock(elapsed)} elapsed{eta}"

    def _run(self) -> None:
        wait = LOG_AFTER
        while not self.stopped.wait(wait) and (line := self.line()) is not None:
            print(line, file=sys.stderr, flush=True)
            wait = LOG_EVERY

    def stop(self) -> None:
        self.stopped.set()


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
    lines = _Lines(display, task_id) if display.disable and total is not None else None
    try:
        yield lambda steps=1: display.advance(task_id, steps)
    finally:
        if lines is not None:
            lines.stop()
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
