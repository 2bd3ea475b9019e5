"""minineo against HuggingFace transformers (eager attention) on random models of many shapes.

Device tests: with MININEO_TEST_DEVICE set, both models run on that device (tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from hf_oracle import TEST_DEVICE, build_hf, hf_config, hf_forward, save_hf
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import gpt2_shapes, neo_shapes, token_batches

import minineo

pytestmark = pytest.mark.device


def compare_everything(hf, model, tokens, **hf_kwargs):
    """Logits, every resid_pre and every attention pattern, explicit path; and the fast path's logits."""
    out = hf_forward(hf, tokens, **hf_kwargs)
    logits, cache = model.run_with_cache(tokens, explicit=True, **hf_kwargs)
    assert_close(logits, out.logits, "logits")
    for layer in range(model.config.n_layers):
        assert_close(cache[f"blocks.{layer}.resid_pre"], out.hidden_states[layer], f"resid_pre {layer}")
        assert_close(cache[f"blocks.{layer}.attn.pattern"], out.attentions[layer], f"pattern {layer}")
    assert_close(model(tokens, **hf_kwargs), out.logits, "fast-path logits")


def check_random_model(directory, arch, shape, batch, weight_scale):
    hf = build_hf(hf_config(arch, **shape), weight_scale=weight_scale)
    model = minineo.load(save_hf(hf, directory), device=TEST_DEVICE)
    hf = hf.to(TEST_DEVICE)
    n, pos, seed = batch
    compare_everything(hf, model, torch.randint(0, 97, (n, pos), generator=torch.Generator().manual_seed(seed)))


@settings(max_examples=25)
@given(shape=neo_shapes(), batch=token_batches(), weight_scale=st.sampled_from([1.0, 4.0]))
def test_gpt_neo_matches_hf(tmp_path_factory, shape, batch, weight_scale):
    check_random_model(tmp_path_factory.mktemp("neo"), "gpt_neo", shape, batch, weight_scale)


@settings(max_examples=20)
@given(shape=gpt2_shapes(), batch=token_batches(), weight_scale=st.sampled_from([1.0, 4.0]))
def test_gpt2_matches_hf(tmp_path_factory, shape, batch, weight_scale):
    check_random_model(tmp_path_factory.mktemp("gpt2"), "gpt2", shape, batch, weight_scale)


def test_local_layer_sees_exactly_window_keys(hf_pair):
    hf, model = hf_pair("gpt_neo", layers=2, window=3, kinds=["local", "global"])
    tokens = torch.randint(0, 97, (1, 12))
    _, cache = model.run_with_cache(tokens)
    local, global_ = cache["blocks.0.attn.pattern"][0, 0], cache["blocks.1.attn.pattern"][0, 0]
    seen = local > 0
    for i in range(12):
        assert seen[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    assert (global_ > 0).sum() == 12 * 13 // 2
    compare_everything(hf, model, tokens)


def test_left_padded_row_gives_unpadded_logits(hf_pair):
    hf, model = hf_pair("gpt_neo", layers=3, window=4)
    short = torch.randint(0, 97, (1, 9))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), short], dim=1)
    long = torch.randint(0, 97, (1, 14))
    tokens = torch.cat([padded, long])
    mask = torch.ones_like(tokens)
    mask[0, :5] = 0
    batched = model(tokens, attention_mask=mask)
    assert_close(batched[0, 5:], model(short)[0], "left-padded row")
    assert_close(batched[1], model(long)[0], "unpadded row")
    # HF's plain forward does not shift positions: give it the same position ids to compare.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = hf_forward(hf, tokens, attention_mask=mask, position_ids=positions)
    assert_close(batched[:, 5:], out.logits[:, 5:], "padded batch vs HF")
    explicit = model(tokens, attention_mask=mask, explicit=True)
    assert_close(explicit[:, 5:], batched[:, 5:], "explicit vs fused, padded")


def test_untied_unembedding_matches_hf(hf_pair):
    hf, model = hf_pair("gpt2", layers=1, tie_word_embeddings=False)
    assert not model.config.tie_unembed
    assert model.W_U.data_ptr() != model.W_E.data_ptr()
    tokens = torch.randint(0, 97, (2, 7))
    compare_everything(hf, model, tokens)


def test_half_precision_neo_does_not_overflow(tmp_path):
    """GPT-Neo's unscaled q.k exceeds float16's range with large weights; HF upcasts, so must we."""
    hf = build_hf(hf_config("gpt_neo", layers=2, heads=2, d_head=32))
    with torch.no_grad():
        for block in hf.transformer.h:
            block.attn.attention.q_proj.weight.mul_(1000.0)
            block.attn.attention.k_proj.weight.mul_(1000.0)
    model = minineo.load(save_hf(hf, tmp_path), device=TEST_DEVICE)
    hf = hf.to(TEST_DEVICE)
    tokens = torch.randint(0, 97, (1, 10))
    _, cache32 = model.run_with_cache(tokens, names=["blocks.0.attn.scores"])
    assert cache32["blocks.0.attn.scores"].isfinite().logical_and(cache32["blocks.0.attn.scores"].abs() > 65504).any()
    half = model.to(torch.float16)
    for explicit in (True, False):
        logits = half(tokens, explicit=explicit)
        assert logits.isfinite().all(), f"float16 logits overflowed (explicit={explicit})"
    hf16 = hf.to(torch.float16)
    assert_close(half(tokens, explicit=True).float(), hf_forward(hf16, tokens).logits.float(), "float16 vs HF", atol=0.5)
