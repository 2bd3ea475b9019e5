"""Real hub weights, wherever they are cached: logits vs HF, and TransformerLens's published losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, cached_hub_model

PROMPTS = ["Hello world!", "The Eiffel Tower is in the city of", "When Mary and John went to the store, John gave a drink to"]
# Mean next-token loss on "Hello world!" with BOS, from TransformerLens's test suite.
PUBLISHED_LOSS = {"gpt2": 5.331855773925781, "EleutherAI/gpt-neo-125M": 4.900552272796631}


@pytest.mark.parametrize("name", list(PUBLISHED_LOSS))
def test_real_weights_loss_matches_published_value(name):
    model = cached_hub_model(name)
    tokens = model.to_tokens("Hello world!")
    logits = model(tokens)
    loss = F.cross_entropy(logits[0, :-1], tokens[0, 1:])
    assert abs(loss.item() - PUBLISHED_LOSS[name]) < 1e-4


@pytest.mark.parametrize("name", list(PUBLISHED_LOSS))
def test_real_weights_logits_match_hf(name):
    from transformers import AutoModelForCausalLM

    model = cached_hub_model(name)
    hf = AutoModelForCausalLM.from_pretrained(model.source, attn_implementation="eager").eval()
    for prompt in PROMPTS:
        tokens = model.to_tokens(prompt)
        with torch.no_grad():
            expected = hf(tokens).logits
        assert_close(model(tokens), expected, f"{name} fast path on {prompt!r}")
        assert_close(model.run_with_cache(tokens)[0], expected, f"{name} explicit on {prompt!r}")
