"""`minineo path-patch` on the embedded model, offline: its table is the library's sweep."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import minineo
from minineo.analysis import path_patching
from minineo.cli import app  # importing the package registers every command

runner = CliRunner()
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)


def test_path_patch_prints_the_largest_path_effects_and_writes_a_heatmap(tmp_path):
    out = tmp_path / "paths.png"
    result = invoke("path-patch", CLEAN, CORRUPTED, "--answer", " Mary", "--wrong", " John", "--receivers",
                    "1.3:k,1.3:v", "--plot", str(out), "--top", "3")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "every head -> 1.3:k, 1.3:v" in text and "compared on M vs J" in text
    assert out.stat().st_size > 0
    m = minineo.load("tiny-neo")
    space = torch.tensor([[ord(" ")]])
    clean, corrupted = (torch.cat([m.to_tokens(p), space], 1) for p in (CLEAN, CORRUPTED))

    def ld(logits):
        return logits[0, -1, ord("M")] - logits[0, -1, ord("J")]

    c, k = float(ld(m(clean))), float(ld(m(corrupted)))
    grid = path_patching(m, clean, corrupted, lambda x: (ld(x) - c) / (c - k), "heads", [(1, 3, "k"), (1, 3, "v")])
    best = int(grid.abs().flatten().argmax())
    assert f"H{best % 4}" in result.output and f"{float(grid.flatten()[best]):+.3f}" in result.output


def test_path_patch_to_the_logits_by_default():
    result = invoke("path-patch", CLEAN, CORRUPTED, "--answer", " Mary", "--wrong", " John", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "every head -> the logits" in " ".join(result.output.split())


def test_path_patch_bad_receivers_are_one_paragraph_errors():
    for receivers, message in [("1.2", "is not LAYER.HEAD:INPUT"), ("5.0:q", "does not exist"),
                               ("1.0:z", "must be 'q', 'k' or 'v'")]:
        result = runner.invoke(app, ["path-patch", CLEAN, CORRUPTED, "--answer", " Mary", "--wrong", " John",
                                     "--receivers", receivers], terminal_width=200)
        assert result.exit_code == 1 and message in " ".join(result.output.split()), (receivers, result.output)


def test_a_near_zero_reversed_gap_is_said_before_the_normalised_effects():
    """The newcomer's case: answers without their leading space give clean -0.086 / corrupted -0.006, whose
    normalised effects (+1.171, -0.821) mean nothing; the one rule (checks.metric_gap_warnings) says so on stderr."""
    from typer.testing import CliRunner

    from minineo.cli import app

    result = CliRunner().invoke(app, ["path-patch", "When Mary and John went to the store, John gave a drink to",
                                      "When Mary and John went to the store, Mary gave a drink to",
                                      "--answer", "Mary", "--wrong", "John", "--receivers", "1.3:k"])
    assert result.exit_code == 0, result.output
    assert "differ by only" in result.output and "direction is reversed" in result.output
