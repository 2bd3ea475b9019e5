"""`minineo run`: the prompt and the continuation share n_ctx (refused up front, or the default shortened with a
warning), and --top-k is at most the vocabulary, as the Python API has it."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import minineo
from minineo.cli import app
from minineo.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    return minineo.load("tiny-neo")


def squeezed(text: str) -> str:
    """Without whitespace: the console wraps a long continuation."""
    return "".join(text.split())


def invoke(*args):
    return runner.invoke(app, ["run", *args], terminal_width=200)


def one_error(result) -> str:
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1 and text.startswith("error: ") and text.count("error:") == 1, result.output
    assert "Traceback" not in result.output
    return text


def test_a_prompt_filling_the_context_gets_no_continuation_and_says_so_up_front(model):
    prompt = "a" * (model.config.n_ctx - 1)  # with BOS: exactly n_ctx tokens
    assert model.to_tokens(prompt).shape[1] == model.config.n_ctx
    result = invoke(prompt)
    assert result.exit_code == 0, result.output
    assert "error" not in result.output and "greedy continuation" not in result.stdout
    warning = " ".join(result.stderr.split())
    assert warning.startswith("warning:") and "no room is left for a continuation" in warning
    assert "next token" in result.stdout  # the top-k table, whole


@pytest.mark.parametrize("prompt, generate", [("hi", 200), ("a" * 127, 3), ("a" * 120, 8)])
def test_an_explicit_generate_that_does_not_fit_is_refused_before_any_output(model, prompt, generate):
    """model.generate refuses the same numbers ("prompt (n) + max_new_tokens (k) exceeds n_ctx"): the CLI does too,
    with the room left, and prints nothing else (no half answer)."""
    tokens = model.to_tokens(prompt)
    room = model.config.n_ctx - tokens.shape[1]
    with pytest.raises(UserError, match="exceeds n_ctx"):
        model.generate(tokens, generate)
    text = one_error(invoke(prompt, "--generate", str(generate)))
    assert f"--generate {generate} does not fit: the prompt is {tokens.shape[1]} tokens" in text
    assert f"n_ctx={model.config.n_ctx}" in text
    assert (f"give --generate {room} or less" if room else "no new token fits") in text
    assert invoke(prompt, "--generate", str(generate)).stdout == ""


def test_an_explicit_generate_that_fits_exactly_is_generated_whole(model):
    tokens = model.to_tokens("hi")
    room = model.config.n_ctx - tokens.shape[1]
    result = invoke("hi", "--generate", str(room))
    assert result.exit_code == 0 and result.stderr == "", result.output
    expected = model.to_string(model.generate(tokens, room)[0, tokens.shape[1]:])
    assert squeezed(f"greedy continuation: {expected!r}") in squeezed(result.stdout)


def test_the_default_continuation_is_shortened_to_fit_with_one_warning(model):
    prompt = "a" * 120
    tokens = model.to_tokens(prompt)
    room = model.config.n_ctx - tokens.shape[1]
    assert 0 < room < 24
    result = invoke(prompt)
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.count("warning:") == 1 and f"shortened from 24 to {room} tokens" in warning
    continuation = model.to_string(model.generate(tokens, room)[0, tokens.shape[1]:])
    assert squeezed(f"greedy continuation: {continuation!r}") in squeezed(result.stdout)


def test_a_short_prompt_gets_the_default_24_tokens_silently(model):
    result = invoke("hi")
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_top_k_beyond_the_vocabulary_is_refused_as_the_lens_refuses_it(model):
    from minineo.views.lens import lens

    vocab = model.config.d_vocab
    with pytest.raises(UserError, match=f"top_k must be in 1..{vocab}, got {vocab + 43}"):  # the Python API's rule
        lens(model, "hi", top_k=vocab + 43)
    text = one_error(invoke("hi", "--top-k", str(vocab + 43)))
    assert f"--top-k must be at most tiny-neo's vocabulary of {vocab} tokens, got {vocab + 43}" in text
    assert f"give --top-k {vocab} or less" in text
    result = invoke("hi", "--top-k", str(vocab), "--generate", "0")
    assert result.exit_code == 0, result.output
    assert re.search(rf"│\s+{vocab}\s+│", result.stdout) and not re.search(rf"│\s+{vocab + 1}\s+│", result.stdout)
