"""`minineo patch` on the embedded model, offline."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import minineo
from minineo.analysis import activation_patching
from minineo.cli import app  # importing the package registers every command

runner = CliRunner()
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)


def test_patch_prints_the_largest_effects_and_writes_a_heatmap(tmp_path):
    out = tmp_path / "patch.png"
    result = invoke("patch", CLEAN, CORRUPTED, "--answer", " Mary", "--wrong", " John", "--plot", str(out), "--top", "3")
    assert result.exit_code == 0, result.output
    assert "normalised logit difference" in result.output and "compared on M vs J" in result.output
    assert out.stat().st_size > 0
    # the table's top row is the grid's largest |value|, computed here with the library function
    m = minineo.load("tiny-neo")
    space = torch.tensor([[ord(" ")]])
    clean, corrupted = (torch.cat([m.to_tokens(p), space], 1) for p in (CLEAN, CORRUPTED))

    def ld(logits):
        return logits[0, -1, ord("M")] - logits[0, -1, ord("J")]

    logits, cache = m.run_with_cache(clean)
    c, k = float(ld(logits)), float(ld(m(corrupted)))
    grid = activation_patching(m, corrupted, cache, lambda x: (ld(x) - k) / (c - k), "resid_pre", "pos")
    best = float(grid.flatten()[grid.flatten().abs().argmax()])
    assert f"{best:+.3f}" in result.output


def test_patch_per_head_with_plot(tmp_path):
    out = tmp_path / "heads.png"
    result = invoke("patch", CLEAN, CORRUPTED, "--answer", " Mary", "--wrong", " John", "--site", "attn.z",
                    "--per", "head", "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert "attn.z per head" in result.output and any(f"H{h}" in result.output for h in range(4))
    assert out.stat().st_size > 0


def test_patch_prompts_of_different_lengths_are_a_one_line_error():
    result = invoke("patch", "ab", "abc", "--answer", " x", "--wrong", " y")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "same length" in text and "clean has 3 tokens, corrupted has 4" in text


def test_patch_bad_site_per_or_answers_are_clear_errors():
    for extra, message in [(["--site", "resid_pre", "--per", "head"], "has no heads"),
                           (["--site", "ln1.scale"], "cannot patch site"),
                           (["--answer", " Mary", "--wrong", " Mary"], "no differing token")]:
        args = ["patch", CLEAN, CORRUPTED] + (["--answer", " Mary", "--wrong", " John"] if "--answer" not in extra else []) + extra
        result = invoke(*args)
        assert result.exit_code == 1 and message in " ".join(result.output.split()), (extra, result.output)
