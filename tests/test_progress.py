"""minineo.progress: a bar on stderr only when stderr is a terminal; nested tasks share one display."""

from __future__ import annotations

import io
import sys

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
