"""Issue 17, part 4: progress a person can trust: slow steps say what runs, bars know their total, long
training says how long before it runs on."""

from __future__ import annotations

import io
import re
import sys
import time

from typer.testing import CliRunner

import minineo
from minineo import analysis, progress, report
from minineo.analysis import tuned_lens
from minineo.cli import app


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_terminal(monkeypatch) -> FakeTerminal:
    """stderr as a terminal; set in the test body (pytest's capture resets sys.stderr after fixtures run)."""
    screen = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


def test_a_delayed_status_shows_only_when_the_work_outlasts_the_delay(monkeypatch):
    screen_tty = fake_terminal(monkeypatch)
    with progress.task("quick work", delay=30.0):
        assert not progress._display.live.is_started  # nothing drawn yet
    assert progress._display is None and "quick work" not in screen_tty.getvalue()
    with progress.task("slow work", delay=0.05):
        for _ in range(100):  # the machine may be loaded: wait for the timer, at most 10 s
            if progress._display.live.is_started:
                break
            time.sleep(0.1)
        assert progress._display.live.is_started
    assert progress._display is None


def test_a_task_without_a_total_shows_no_count(monkeypatch):
    screen_tty = fake_terminal(monkeypatch)
    with progress.task("spinning", total=None):
        time.sleep(0.3)
    assert "spinning" in screen_tty.getvalue() and "0/?" not in screen_tty.getvalue()


def test_activation_patching_shows_a_bar_whose_total_is_known_from_the_start(monkeypatch):
    model = minineo.load()
    totals = []
    opened = progress.task

    def spy(description, total=None, delay=0.0):
        totals.append((description, total))
        return opened(description, total, delay)

    monkeypatch.setattr(progress, "task", spy)
    tokens = model.to_tokens("When Mary and John went to the store, John gave a drink to ")
    analysis.head_ablation_effects(model, tokens, lambda logits: logits[0, -1, 77], "mean")
    cells = [total for description, total in totals if description.startswith("activation patching")]
    assert cells == [model.config.n_layers * model.config.n_heads]  # 8 heads: 2 layers x 4


def test_loading_says_what_it_does_when_it_is_slow(monkeypatch):
    from minineo.cli import shared

    delays = []
    opened = progress.task
    monkeypatch.setattr(progress, "task", lambda d, total=None, delay=0.0: delays.append((d, delay)) or opened(d, total, delay))
    result = CliRunner().invoke(app, ["run", "hi", "--generate", "0"], catch_exceptions=False)
    assert result.exit_code == 0
    assert ("loading tiny-neo onto cpu", 2.0) in delays and any(d.startswith("running tiny-neo") for d, _ in delays)
    assert shared.working  # the one helper every command uses


def test_tuned_lens_training_that_would_be_long_says_its_estimate_and_how_to_shorten_it(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"When Mary and John went to the store, John gave a drink to Mary {i}." for i in range(60)))
    monkeypatch.setattr(tuned_lens, "ESTIMATE_ABOVE_S", 0.0)  # every run counts as long here
    with report.collect() as said:
        analysis.train_tuned_lens(minineo.load(), corpus, steps=3, batch_size=2, context=32)
    assert len(said) == 1 and re.search(r"will take about .* for the first of 3 steps.*--steps", said[0])
    result = CliRunner().invoke(app, ["tune-lens", str(corpus), "--out", str(tmp_path / "lens"), "--steps", "3",
                                      "--batch-size", "2", "--context", "32"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: training the tuned lens will take about" in " ".join(result.stderr.split())
    monkeypatch.setattr(tuned_lens, "ESTIMATE_ABOVE_S", 1e9)  # a short run says nothing
    with report.collect() as said:
        analysis.train_tuned_lens(minineo.load(), corpus, steps=2, batch_size=2, context=32)
    assert said == []
