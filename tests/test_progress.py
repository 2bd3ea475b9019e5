"""minineo.progress: a bar on stderr when stderr is a terminal, plain lines for long tasks elsewhere; nested tasks
share one display."""

from __future__ import annotations

import io
import re
import sys
import time

from minineo import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_when_stderr_is_not_a_terminal(capsys):
    with progress.task("outer", total=2) as advance:
        assert list(progress.track(range(3), "inner")) == [0, 1, 2]
        advance()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert progress._display is None


def test_a_terminal_sees_what_runs_and_nested_tasks_share_one_display(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.task("mean |cos| of W_E", total=4) as advance:
        outer = progress._display
        for _ in progress.track(range(2), "inner step"):
            assert progress._display is outer  # rich allows one live display
        advance(4)
    assert progress._display is None
    assert "mean |cos| of W_E" in terminal.getvalue()


def test_outside_a_terminal_a_long_task_writes_plain_lines_with_its_count_and_time_left(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_AFTER", 0.2)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.2)
    with progress.task("exact: 4 pairs", total=10) as advance:
        advance(5)
        time.sleep(1.0)  # about 4 lines (at least one, on a loaded machine)
    with progress.task("no total"):  # a spinner's task has no count to report: no lines
        time.sleep(0.5)
    time.sleep(0.5)  # a stopped task writes nothing more
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and all(re.fullmatch(r"exact: 4 pairs: 5/10 \(50%\), 0:00:0\d elapsed, about 0:00:0\d left", line)
                         for line in lines), err
