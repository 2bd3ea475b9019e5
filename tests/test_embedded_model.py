"""Facts about the shipped tiny GPT-Neo, computed here from its weights (not copied from a file)."""

from __future__ import annotations

import torch
from conftest import assert_close
from transformers import GPTNeoForCausalLM

import minineo
from minineo import analysis
from minineo.hub import EMBEDDED_DIR


def test_hf_loads_the_shipped_files_and_agrees():
    model = minineo.load()
    hf = GPTNeoForCausalLM.from_pretrained(EMBEDDED_DIR, attn_implementation="eager").eval()
    tokens = model.to_tokens(["When Mary and John went to the store, John gave a drink to", "Beautiful is better than"])
    mask = tokens.attention_mask  # left padding, carried by the tensor
    with torch.no_grad():
        expected = hf(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    real = mask.bool()  # padded positions are nobody's prediction
    assert_close(model(tokens)[real], expected[real], "embedded model vs HF")
    assert model.config.architecture == "gpt_neo" and None in model.config.windows and any(model.config.windows)


def test_it_learned_in_context_copying():
    model = minineo.load()
    seq_len = 30
    repeated = analysis.repeated_tokens(model, seq_len, n_seqs=16, seed=123, low=33, high=127)  # printable bytes
    scores = analysis.head_scores(model, repeated, repeated_len=seq_len)
    assert scores.induction_loss < 0.3 * scores.first_half_loss, (scores.first_half_loss, scores.induction_loss)
    assert float(scores.induction.max()) > 0.5


def test_it_completes_its_training_text():
    model = minineo.load()
    prompt = "When Mary and John went to the store, John gave a drink to"
    completion = model.to_string(model.generate(model.to_tokens(prompt), max_new_tokens=5)[0, -5:])
    assert completion.startswith(" Mary")


def test_tokenizer_round_trips_bytes():
    model = minineo.load()
    text = "Hello, wörld! ∑ 123"
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text
