"""Mechanics checked as invariants: decompositions sum up, patches do what they say, paths agree."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(params=["gpt2", "gpt_neo"])
def model(request, hf_pair):
    return hf_pair(request.param, layers=3, window=3, weight_scale=3.0)[1]


def tokens(n=2, pos=11, seed=0):
    return torch.randint(0, 97, (n, pos), generator=torch.Generator().manual_seed(seed))


def test_residual_decomposition_sums_to_final_residual(model):
    _, cache = model.run_with_cache(tokens())
    parts, labels = cache.decompose_resid()
    assert len(labels) == parts.shape[0] == 2 + 2 * model.config.n_layers
    assert_close(parts.sum(0), cache[f"blocks.{model.config.n_layers - 1}.resid_post"], "sum of components")


def test_apply_ln_final_of_components_gives_logits(model):
    logits, cache = model.run_with_cache(tokens())
    parts, _ = cache.decompose_resid()
    normed = cache.apply_ln_final(parts, bias=False).sum(0) + model.ln_final.b
    assert_close(normed @ model.W_U, logits, "ln_final(components) @ W_U")


def test_accumulated_resid_is_resid_pre_then_final(model):
    _, cache = model.run_with_cache(tokens())
    resid, labels = cache.accumulated_resid()
    assert resid.shape[0] == model.config.n_layers + 1 and labels[-1] == "final_post"
    assert torch.equal(resid[1], cache["blocks.1.resid_pre"])


def test_head_results_plus_b_O_equal_attn_out(model):
    _, cache = model.run_with_cache(tokens(), names=["blocks.1.attn.result", "blocks.1.attn_out", "blocks.1.attn.z"])
    assert_close(cache["blocks.1.attn.result"].sum(2) + model.blocks[1].attn.b_O, cache["blocks.1.attn_out"], "sum of heads")
    _, lazy = model.run_with_cache(tokens(), names=["blocks.1.attn.z"])
    assert_close(lazy["blocks.1.attn.result"], cache["blocks.1.attn.result"], "lazy result from z and W_O")


def test_attn_result_is_recorded_only_when_asked_for(model):
    _, cache = model.run_with_cache(tokens())
    assert not any(name.endswith("attn.result") for name in cache)


def test_q_k_v_views_reproduce_recorded_q_k_v(model):
    _, cache = model.run_with_cache(tokens())
    attn, x = model.blocks[2].attn, cache["blocks.2.ln1.normalized"] * model.blocks[2].ln1.w + model.blocks[2].ln1.b
    for name, W, b in [("q", attn.W_Q, attn.b_Q), ("k", attn.W_K, attn.b_K), ("v", attn.W_V, attn.b_V)]:
        assert W.data_ptr() >= attn.W_QKV.data_ptr()  # a view of the one fused weight, not a copy
        expected = torch.einsum("bpd,hde->bphe", x, W) + b
        assert_close(cache[f"blocks.2.attn.{name}"], expected, f"attn.{name} from W_{name.upper()}", atol=1e-4)


def test_layer_norm_parts_reconstruct_input(model):
    _, cache = model.run_with_cache(tokens())
    x = cache["blocks.1.resid_mid"]
    assert_close(cache["blocks.1.ln2.normalized"] * cache["blocks.1.ln2.scale"], x - x.mean(-1, keepdim=True), "normalized * scale")


def test_identity_patch_changes_nothing(model):
    reference = model(tokens())
    patched = model(tokens(), patch={name: (lambda v: v) for name in ["blocks.0.attn.z", "blocks.1.ln1.scale",
                                                                      "blocks.2.attn.pattern", "embed"]})
    assert_close(patched, reference, "identity patch")


def test_patching_resid_pre_with_another_prompt_gives_its_logits(model):
    a, b = tokens(seed=1), tokens(seed=2)
    _, cache_b = model.run_with_cache(b, names=["blocks.1.resid_pre"])
    patched = model(a, patch={"blocks.1.resid_pre": cache_b["blocks.1.resid_pre"]})
    assert_close(patched, model(b), "a patched with b's resid_pre")


def test_patched_site_is_recorded_after_the_patch(model):
    zeros = torch.zeros(2, 11, model.config.n_heads, model.config.d_head)
    _, cache = model.run_with_cache(tokens(), names=["blocks.0.attn.z"], patch={"blocks.0.attn.z": zeros})
    assert torch.equal(cache["blocks.0.attn.z"], zeros)


def test_patching_attn_result_equals_patching_z_per_head(model):
    def kill_head_result(r):
        r = r.clone()
        r[:, :, 1] = 0
        return r

    def kill_head_z(z):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    assert_close(model(tokens(), patch={"blocks.1.attn.result": kill_head_result}),
                 model(tokens(), patch={"blocks.1.attn.z": kill_head_z}), "result vs z ablation")


@settings(max_examples=10)
@given(pos=st.integers(1, 30), n=st.integers(1, 3))
def test_fast_path_equals_explicit_path(model, pos, n):
    t = tokens(n, pos)
    assert_close(model(t), model(t, explicit=True), "fused vs explicit")


def test_names_accept_hook_prefix_and_short_forms(model):
    _, cache = model.run_with_cache(tokens(), names=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"])
    assert sorted(cache) == ["blocks.0.attn.pattern", "blocks.0.attn.scores"]
    assert torch.equal(cache["blocks.0.attn.hook_pattern"], cache["pattern", 0])
    assert torch.equal(cache["blocks.0.attn.scores"], cache["attn_scores", 0])


def test_stack_gives_one_slice_per_layer(model):
    _, cache = model.run_with_cache(tokens())
    stacked = cache.stack("pattern")
    assert stacked.shape == (model.config.n_layers, 2, model.config.n_heads, 11, 11)
    assert torch.equal(stacked[2], cache["blocks.2.attn.pattern"])


def test_scores_recomputed_on_access_equal_the_forward_pass_scores(model):
    """attn.scores is not kept but recomputed from q and k; keeping it (an identity patch) must agree exactly."""
    t = tokens()
    mask = torch.ones_like(t)
    mask[0, :3] = 0  # padding too: the recomputation must use the forward's own mask
    _, lazy = model.run_with_cache(t, attention_mask=mask, explicit=True)  # the same q and k as `kept`
    _, kept = model.run_with_cache(t, attention_mask=mask, patch={f"blocks.{L}.attn.scores": (lambda s: s)
                                                                  for L in range(model.config.n_layers)})
    for layer in range(model.config.n_layers):
        name = f"blocks.{layer}.attn.scores"
        assert name in lazy and name in list(lazy)
        assert torch.equal(lazy[name], kept[name])
        assert torch.equal(lazy[name].softmax(-1), lazy[f"blocks.{layer}.attn.pattern"])
