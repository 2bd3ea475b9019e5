"""Model.run_from: continuing the forward pass from a layer's resid_pre reproduces the full pass."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import gpt2_shapes, neo_shapes

from minineo.errors import UserError


def left_padded(batch: int, pos: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 97, (batch, pos), generator=g)
    mask = torch.ones(batch, pos, dtype=torch.long)
    for row in range(1, batch):
        mask[row, : int(torch.randint(0, pos, (1,), generator=g))] = 0  # row 0 unpadded, others left-padded
    return tokens, mask


def check_every_layer(model, tokens, mask):
    logits, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("resid_pre"), attention_mask=mask)
    for layer in range(model.config.n_layers):
        resumed = model.run_from(layer, cache[f"blocks.{layer}.resid_pre"], attention_mask=mask)
        assert_close(resumed, logits, f"run_from({layer})")


@settings(max_examples=6)
@given(shape=neo_shapes(), pos=st.integers(2, 20), padded=st.booleans(), seed=st.integers(0, 2**16))
def test_run_from_any_layer_equals_the_full_pass_neo(hf_pair, shape, pos, padded, seed):
    shape["window"] = min(shape["window"], max(1, pos - 1))  # local windows shorter than the sequence
    _, model = hf_pair("gpt_neo", **shape)
    tokens, mask = left_padded(3, pos, seed)
    check_every_layer(model, tokens, mask if padded else None)


@settings(max_examples=6)
@given(shape=gpt2_shapes(), pos=st.integers(2, 20), padded=st.booleans(), seed=st.integers(0, 2**16))
def test_run_from_any_layer_equals_the_full_pass_gpt2(hf_pair, shape, pos, padded, seed):
    _, model = hf_pair("gpt2", **shape)
    tokens, mask = left_padded(3, pos, seed)
    check_every_layer(model, tokens, mask if padded else None)


def test_run_from_records_the_later_sites_and_applies_patches(hf_pair):
    _, model = hf_pair("gpt_neo", layers=3, heads=4, window=3)
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    patch = {"blocks.2.attn.z": lambda z: z * 0.5}
    logits, cache = model.run_with_cache(tokens, patch=patch)
    resumed, later = model.run_from(1, cache["blocks.1.resid_pre"], patch=patch, names=True)
    assert_close(resumed, logits, "patched run_from")
    assert "blocks.0.resid_pre" not in later
    for name in ("blocks.1.attn.pattern", "blocks.2.attn.z", "ln_final.scale"):
        assert_close(later[name], cache[name], name)


def test_run_from_bad_layer_or_shape_is_a_user_error(hf_pair):
    _, model = hf_pair("gpt2", layers=2)
    with pytest.raises(UserError, match=r"layer must be in 0\.\.1, got 5"):
        model.run_from(5, torch.zeros(1, 3, model.config.d_model))
    with pytest.raises(UserError, match=r"resid_pre .*has shape \(1, 3, 7\) but must have shape"):
        model.run_from(0, torch.zeros(1, 3, 7))
