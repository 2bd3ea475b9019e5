"""A command line typer cannot parse is one `error:` line (exit 2, click's code) naming the option and the value,
never typer's multi-line usage box; --help and a bare `minineo` still show the help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from minineo.cli import app

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.parametrize("args, option, value", [
    (["discover", "--top", "1.5"], "--top", "1.5"),
    (["discover", "--n", "1.5"], "--n", "1.5"),
    (["run", "hi", "--top-k", "2.5"], "--top-k", "2.5"),
    (["run", "hi", "--generate=x"], "--generate", "x"),
    (["ioi", "--n", "1.5"], "--n", "1.5"),
    (["heads", "--n-seqs", "0.5"], "--n-seqs", "0.5"),
    (["heads", "--seq-len", "1e3"], "--seq-len", "1e3"),
    (["eval", "corpus.txt", "--max-tokens", "3.5"], "--max-tokens", "3.5"),
    (["harvest", "c.txt", "--names", "blocks.0.resid_post", "--out", "h", "--context", "1.5"], "--context", "1.5"),
])
def test_a_value_typer_cannot_parse_is_one_error_line(args, option, value):
    result = runner.invoke(app, args, terminal_width=100, prog_name="minineo")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    text = " ".join(result.stderr.split())
    assert text.startswith("error: ") and text.count("error:") == 1, result.stderr
    assert f"'{option}' (got '{value}')" in text and "valid integer" in text
    assert f"minineo {args[0]} --help" in text
    assert not any(box in result.output for box in "╭╰│") and "Usage:" not in result.output
    assert len(lines) <= 3  # one paragraph, wrapped only at the terminal's width


@pytest.mark.parametrize("args, said", [
    (["run"], "Missing argument 'prompt'"),
    (["run", "hi", "--nope"], "No such option: --nope"),
    (["runn"], "No such command 'runn'. Did you mean 'run'?"),
])
def test_other_usage_errors_are_one_error_line_too(args, said):
    result = runner.invoke(app, args, terminal_width=100)
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and text.startswith("error: ") and said in text, result.output
    assert not any(box in result.output for box in "╭╰│")


def test_help_is_still_help():
    assert runner.invoke(app, ["run", "--help"]).exit_code == 0
    bare = runner.invoke(app, [])
    assert bare.exit_code == 2 and "Usage:" in bare.output and "error:" not in bare.output  # as typer has it
