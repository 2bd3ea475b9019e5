"""The `minineo` command on the embedded model, offline."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from minineo import cli_analysis  # noqa: F401  (registers the analysis commands)
from minineo.cli import app

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


def invoke(*args):
    result = runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)
    return result


def test_run_prints_next_tokens_and_the_tokens_seen():
    result = invoke("run", PROMPT, "--top-k", "5")
    assert result.exit_code == 0, result.output
    assert "next token" in result.output and "probability" in result.output and "tiny-neo" in result.output
    assert "greedy continuation" in result.output


def test_cache_lists_every_name_and_saves(tmp_path):
    out = tmp_path / "cache.safetensors"
    result = invoke("cache", "Hello", "--save", str(out))
    assert result.exit_code == 0, result.output
    assert "blocks.1.attn.pattern" in result.output and "ln_final.scale" in result.output
    saved = load_file(out)
    assert saved["blocks.0.attn.pattern"].shape[-1] == 6  # BOS + 5 bytes
    assert not list(tmp_path.glob("*.tmp"))


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("download", "gpt2", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "could not be reached" in text and "minineo download gpt2" in text


def test_unknown_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("run", "hi", "--model", "./no/such/folder")
    assert result.exit_code == 1 and "not a directory" in " ".join(result.output.split())


@pytest.mark.parametrize("args", [
    ["embeddings"],
    ["lens", PROMPT],
    ["heads", "--seq-len", "20", "--n-seqs", "4", "--prompt", "abcabc"],
    ["attribute", PROMPT, "--answer", " Mary", "--wrong", " John"],
    ["ablate", PROMPT, "--answer", " Mary", "--wrong", " John", "--heads", "0.1,1.2"],
    ["ioi", "--n", "8"],
])
def test_analysis_commands_print_tables_and_write_plots(tmp_path, args):
    plot = tmp_path / "plot.png"
    result = invoke(*args, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
