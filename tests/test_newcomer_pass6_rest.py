"""The sixth newcomer pass's findings on the command line's edges, each against the behaviour it should have: a
corpus that is not JSON is one error line (no log line of the datasets library before it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_a_corpus_that_is_not_json_is_one_error_line_and_nothing_else(tmp_path):
    pytest.importorskip("datasets", reason="eval reads a corpus with pip install 'minineo[harvest]'")
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("not json\n")
    done = subprocess.run([sys.executable, "-m", "minineo", "eval", str(corpus)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines[0].startswith("error: could not read the corpus") and "Failed to load JSON" not in done.stderr, lines
