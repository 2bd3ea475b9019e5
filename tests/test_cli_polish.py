"""Newcomer polish of the `minineo` command: token display, plurals, single messages, 80-column titles."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import minineo
from minineo.cli.display import show, show_token, token_text
from minineo.cli import app  # importing the package registers every command

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


def invoke(*args, width=200):
    return runner.invoke(app, list(args), catch_exceptions=False, terminal_width=width)


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


# ---- a byte token that is not UTF-8 on its own is shown as \xNN, not '�' ----------------------------------


def test_every_byte_token_has_its_own_text(tiny):
    # oracle: the embedded model's token t is the byte t (its tokenizer has no merges)
    assert all(tiny.tokenizer.token_bytes(b) == bytes([b]) for b in range(256))
    shown = [show_token(tiny, b) for b in range(256)]
    assert len(set(shown)) == 256 and not any("\ufffd" in s for s in shown)
    assert show_token(tiny, 0xB0) == r"\xb0" and show_token(tiny, 0xE9) == r"\xe9"
    assert show_token(tiny, ord("a")) == "a" and show_token(tiny, ord(" ")) == "␣" and show_token(tiny, 10) == r"\n"
    assert show_token(tiny, ord("\\")) == r"\\"  # a real backslash cannot be mistaken for an escape
    assert token_text(tiny, 0xB0) == b"\xb0".decode("utf-8", "surrogateescape")
    assert tiny.to_str_tokens([0xB0, 0xB1]) == ["\ufffd", "\ufffd"]  # the library keeps the faithful decode
    assert show("é [b]") == r"é␣\[b]"  # decodable text is unchanged, rich markup escaped


def test_run_shows_the_bytes_of_a_split_character():
    result = invoke("run", "café", "--top-k", "3", "--generate", "0")
    assert result.exit_code == 0, result.output
    assert "\ufffd" not in result.output
    assert r"\xc3|" in result.output and r"\xa9|" in result.output  # é is the two bytes c3 a9


# ---- counts read "1 token", "2 tokens"; an empty prompt says it is BOS alone ------------------------------------


def test_counts_are_pluralised():
    from minineo.cli.display import plural

    assert [plural(n, "token") for n in (0, 1, 2)] == ["0 tokens", "1 token", "2 tokens"]
    assert plural(1, "process", "processes") == "1 process" and plural(3, "process", "processes") == "3 processes"
    one = " ".join(invoke("run", "a", "--generate", "0").output.split())
    assert "saw 2 tokens:" in one
    result = invoke("heads", "--n-seqs", "1", "--seq-len", "2", "--top", "1")
    assert result.exit_code == 0, result.output
    assert "(1 random sequence of 2 tokens, repeated)" in " ".join(result.output.split())


def test_an_empty_prompt_runs_on_bos_alone_and_says_so():
    result = invoke("run", "", "--top-k", "3", "--generate", "0")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "saw 1 token: <|endoftext|>|" in text and "1 tokens" not in text
    assert "note: the prompt is empty: the model starts from its BOS token <|endoftext|> alone" in text
    assert "the prompt is empty" not in " ".join(invoke("run", "a", "--generate", "0").output.split())


def test_two_shared_answer_tokens_are_counted_in_the_plural():
    result = invoke("attribute", PROMPT, "--answer", " Mary", "--wrong", " Max", "--top", "1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "share their first 3 tokens ␣ M a; comparing r against x after the prompt plus the shared tokens" in text


# ---- ablate prints the clean metric once ------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [[], ["--heads", "1.0,1.2"]])
def test_ablate_prints_the_clean_metric_once(heads):
    result = invoke("ablate", PROMPT, "--answer", " Mary", "--wrong", " John", "--top", "2", *heads)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    clean = re.findall(r"clean ([-+]\d+\.\d+)", text)
    assert len(clean) == 1, text
    assert "metric: the logit difference M - J at the last position" in text
    assert ("with heads 1.0,1.2 zero-ablated" in text) == bool(heads)


# ---- at 80 columns a table's title is one line, never wrapped into a column of fragments ------------------------


@pytest.mark.parametrize("args, titles", [
    (["run", PROMPT, "--top-k", "3", "--generate", "0"], ["next token after ' went to the store, John gave a drink to' (␣ is a space)"]),
    (["attribute", PROMPT, "--answer", " Mary", "--wrong", " John", "--top", "3"], ["direct logit attribution to M - J"]),
    (["ablate", PROMPT, "--answer", " Mary", "--wrong", " John", "--top", "3", "--method", "mean"],
     ["single-head mean-ablation: metric change (most negative = most needed)",
      r"backup heads: DLA growth, top 3 heads by DLA \(L\dH\d, L\dH\d, L\dH\d\) mean-ablated"]),  # top 3 by DLA
    (["heads", "--top", "2", "--n-seqs", "2", "--prompt", "abcdabcd"],
     ["heads by induction score (2 random sequences of 50 tokens, repeated)", "heads by induction score on 'abcdabcd'"]),
])
def test_table_titles_stay_on_one_line_at_80_columns(args, titles):
    result = invoke(*args, width=80)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert max(map(len, result.output.splitlines())) <= 80
    for title in titles:  # whole lines; a title with the model's head names is a pattern
        assert any(line == title or re.fullmatch(title, line) for line in lines), result.output


def test_embeddings_headers_fit_80_columns_unclipped():
    result = invoke("embeddings", "--top", "2", "--sample", "64", "--no-autoencode", width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and max(map(len, result.output.splitlines())) <= 80
    assert "(centred)" in result.output
    sample_one = invoke("embeddings", "--sample", "1")
    assert sample_one.exit_code == 1 and "--sample must be 0 or at least 2 (0: every row" in " ".join(sample_one.output.split())


def test_lens_with_a_wrong_tuned_lens_is_one_error_even_for_an_empty_prompt(tmp_path):
    result = invoke("lens", "", "--tuned", str(tmp_path / "no-lens"))
    assert result.exit_code == 1 and result.output.startswith("error:") and "note:" not in result.output
