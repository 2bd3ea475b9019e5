"""Newcomer polish of the `minineo` command: token display, plurals, single messages, 80-column titles."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import minineo
from minineo import cli_analysis  # noqa: F401  (registers the analysis commands)
from minineo.cli import app, show, show_token, token_text

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
