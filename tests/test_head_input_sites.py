"""Per-head input sites (blocks.L.attn_in / q_input / k_input / v_input, blocks.L.mlp_in): TransformerLens's
meaning, checked by invariants and closed forms built here from the parameters, never by the code under test."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo.errors import UserError

ARCHS = ["gpt2", "gpt_neo"]


def model_and_tokens(hf_pair, arch, padded=False):
    _, model = hf_pair(arch, layers=2, heads=4, d_head=8, window=3, weight_scale=2.0)
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = None
    if padded:
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[0, :3] = 0
    return model, tokens, mask


def ln1(model, layer, x):
    """ln1 of x (..., d_model) from the parameters: (x - mean) / sqrt(var + eps) * w + b."""
    ln = model.blocks[layer].ln1
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * ln.w + ln.b


def test_shapes_tl_spellings_and_recorded_at_no_cost(hf_pair):
    model, tokens, _ = model_and_tokens(hf_pair, "gpt2")
    cfg = model.config
    default = model.run_with_cache(tokens)[1]
    assert "blocks.0.q_input" not in list(default)  # optional in TransformerLens too: only when named
    names = ["blocks.1.hook_attn_in", "blocks.1.hook_q_input", "blocks.1.hook_k_input", "blocks.1.hook_v_input",
             "blocks.0.hook_mlp_in", "blocks.1.resid_pre"]
    _, cache = model.run_with_cache(tokens, names=names)
    resid_pre = cache["blocks.1.resid_pre"]
    for site in ("attn_in", "q_input", "k_input", "v_input"):
        value = cache[f"blocks.1.{site}"]
        assert value.shape == (2, 7, cfg.n_heads, cfg.d_model)
        assert torch.equal(value, resid_pre[:, :, None].expand_as(value))
        assert value.data_ptr() == resid_pre.data_ptr() and value.stride(2) == 0  # a view: no memory
    assert cache["blocks.0.mlp_in"].shape == (2, 7, cfg.d_model)
    assert torch.equal(cache["blocks.0.mlp_in"], model.run_with_cache(tokens, names=["blocks.0.resid_mid"])[1]["blocks.0.resid_mid"])
    assert minineo.record.sites.shape_of("blocks.0.q_input", cfg, 2, 7) == (2, 7, cfg.n_heads, cfg.d_model)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["q_input", "k_input", "v_input", "attn_in"])
def test_patching_an_input_with_its_own_value_changes_nothing(hf_pair, arch, site):
    model, tokens, mask = model_and_tokens(hf_pair, arch, padded=True)
    logits, cache = model.run_with_cache(tokens, names=[f"blocks.1.{site}"], attention_mask=mask)
    for value in (cache[f"blocks.1.{site}"], lambda x: x):
        patched = model(tokens, patch={f"blocks.1.{site}": value}, attention_mask=mask)
        assert (patched - logits).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_one_heads_input_changes_only_that_heads_query_key_or_value(hf_pair, arch, kind):
    model, tokens, mask = model_and_tokens(hf_pair, arch, padded=True)
    layer, head, cfg = 1, 2, model.config
    X = torch.randn(2, 7, cfg.d_model, generator=torch.Generator().manual_seed(2)) * 3

    def patch(x):
        x = x.clone()
        x[:, :, head] = X
        return x

    names = [f"blocks.{layer}.attn.{s}" for s in "qkv"]
    _, clean = model.run_with_cache(tokens, names=names, attention_mask=mask)
    _, patched = model.run_with_cache(tokens, names=names, patch={f"blocks.{layer}.{kind}_input": patch},
                                      attention_mask=mask)
    attn = model.blocks[layer].attn
    W, b = {"q": (attn.W_Q, attn.b_Q), "k": (attn.W_K, attn.b_K), "v": (attn.W_V, attn.b_V)}[kind]
    want = ln1(model, layer, X) @ W[head] + b[head]  # (batch, pos, d_head): the closed form
    for s in "qkv":
        got, before = patched[f"blocks.{layer}.attn.{s}"], clean[f"blocks.{layer}.attn.{s}"]
        others = [h for h in range(cfg.n_heads) if s != kind or h != head]
        assert (got[:, :, others] - before[:, :, others]).abs().max() < 1e-5, (s, "changed elsewhere")
        if s == kind:
            assert (got[:, :, head] - want).abs().max() < 1e-4, "the patched head reads ln1(X)"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_heads_query_reading_X_is_the_query_of_ln1_X_alone(hf_pair, arch):
    """q_input = X for every head equals patching the queries with ln1(X) W_Q + b_Q (keys, values untouched)."""
    model, tokens, mask = model_and_tokens(hf_pair, arch, padded=True)
    layer, cfg = 0, model.config
    X = torch.randn(2, 7, cfg.d_model, generator=torch.Generator().manual_seed(3))
    attn = model.blocks[layer].attn
    q = torch.einsum("bpm,hme->bphe", ln1(model, layer, X), attn.W_Q) + attn.b_Q
    want = model(tokens, patch={f"blocks.{layer}.attn.q": q}, attention_mask=mask)
    got = model(tokens, patch={f"blocks.{layer}.q_input": X[:, :, None].expand(-1, -1, cfg.n_heads, -1)},
                attention_mask=mask)
    assert (got - want).abs().max() < 1e-4 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("arch", ARCHS)
def test_attn_in_X_for_every_head_is_ln1_reading_X(hf_pair, arch):
    """attn_in = X for all heads equals patching ln1.normalized with X normalised (resid_pre still flows on)."""
    model, tokens, mask = model_and_tokens(hf_pair, arch, padded=True)
    layer, cfg = 1, model.config
    X = torch.randn(2, 7, cfg.d_model, generator=torch.Generator().manual_seed(4)) * 2
    centred = X - X.mean(-1, keepdim=True)
    normalized = centred / (centred.pow(2).mean(-1, keepdim=True) + model.blocks[layer].ln1.eps).sqrt()
    want = model(tokens, patch={f"blocks.{layer}.ln1.normalized": normalized}, attention_mask=mask)
    got = model(tokens, patch={f"blocks.{layer}.attn_in": X[:, :, None].expand(-1, -1, cfg.n_heads, -1)},
                attention_mask=mask)
    assert (got - want).abs().max() < 1e-4 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_in_changes_the_mlps_input_but_not_resid_mids_flow(hf_pair, arch):
    model, tokens, mask = model_and_tokens(hf_pair, arch)
    layer, cfg = 0, model.config
    names = [f"blocks.{layer}.{s}" for s in ("resid_mid", "mlp_out", "resid_post")]
    logits, clean = model.run_with_cache(tokens, names=names)
    same = model(tokens, patch={f"blocks.{layer}.mlp_in": clean[f"blocks.{layer}.resid_mid"]})
    assert (same - logits).abs().max() < 1e-5
    X = torch.randn(2, 7, cfg.d_model, generator=torch.Generator().manual_seed(5))
    # the oracle: the MLP's output when its input is X, from a run whose resid_mid is X
    mlp_of_X = model.run_with_cache(tokens, names=names, patch={f"blocks.{layer}.resid_mid": X})[1][f"blocks.{layer}.mlp_out"]
    _, patched = model.run_with_cache(tokens, names=names, patch={f"blocks.{layer}.mlp_in": X})
    assert torch.equal(patched[f"blocks.{layer}.resid_mid"], clean[f"blocks.{layer}.resid_mid"])
    assert (patched[f"blocks.{layer}.mlp_out"] - mlp_of_X).abs().max() < 1e-5
    want_post = clean[f"blocks.{layer}.resid_mid"] + mlp_of_X
    assert (patched[f"blocks.{layer}.resid_post"] - want_post).abs().max() < 1e-5
    # the cache's ln2.normalized follows the patched MLP input (it is stored, not recomputed from resid_mid)
    _, with_ln = model.run_with_cache(tokens, names=[f"blocks.{layer}.ln2.normalized"], patch={f"blocks.{layer}.mlp_in": X})
    centred = X - X.mean(-1, keepdim=True)
    want_ln = centred / (centred.pow(2).mean(-1, keepdim=True) + model.blocks[layer].ln2.eps).sqrt()
    assert (with_ln[f"blocks.{layer}.ln2.normalized"] - want_ln).abs().max() < 1e-5


def test_a_patch_function_writing_in_place_reaches_only_its_own_site(hf_pair):
    """q_input, k_input, v_input share attn_in and mlp_in is resid_mid: an in-place write must stay local."""
    model, tokens, _ = model_and_tokens(hf_pair, "gpt_neo")
    X = torch.randn(2, 7, model.config.d_model, generator=torch.Generator().manual_seed(6))

    def in_place(x):  # head 1's input (batch, pos, head, d_model), or position 1 of the MLP's (batch, pos, d_model)
        if x.ndim == 4:
            x[:, :, 1] = X
        else:
            x[:, 1] = X[:, 1]
        return x

    def clone_first(x):
        return in_place(x.clone())

    for site, names in (("blocks.1.q_input", ["blocks.1.attn.k", "blocks.1.attn.v"]),
                        ("blocks.0.mlp_in", ["blocks.0.resid_mid", "blocks.0.resid_post"])):
        got = model.run_with_cache(tokens, names=names, patch={site: in_place})[1]
        want = model.run_with_cache(tokens, names=names, patch={site: clone_first})[1]
        for name in names:
            assert torch.equal(got[name], want[name]), (site, name)


def test_lazy_q_input_follows_a_patched_attn_in(hf_pair):
    model, tokens, _ = model_and_tokens(hf_pair, "gpt2")
    X = torch.randn(2, 7, model.config.n_heads, model.config.d_model)
    _, cache = model.run_with_cache(tokens, names=["blocks.0.q_input", "blocks.0.attn_in"], patch={"blocks.0.attn_in": X})
    assert torch.equal(cache["blocks.0.attn_in"], X) and torch.equal(cache["blocks.0.q_input"], X)


def test_ln1_and_a_head_input_patched_together_is_a_clear_error(hf_pair):
    model, tokens, _ = model_and_tokens(hf_pair, "gpt2")
    with pytest.raises(UserError, match="patch either ln1's sites or the per-head inputs"):
        model(tokens, patch={"blocks.0.q_input": lambda x: x, "blocks.0.ln1.normalized": lambda x: x})
    with pytest.raises(UserError, match="shape"):
        model(tokens, patch={"blocks.0.k_input": torch.zeros(2, 7, model.config.d_model)})


def test_attn_out_patched_with_a_tensor_computes_no_attention(hf_pair, monkeypatch):
    """Frozen attention (path patching's frozen heads) costs nothing, and gives the same logits as computing it."""
    model, tokens, mask = model_and_tokens(hf_pair, "gpt_neo", padded=True)
    frozen = torch.randn(2, 7, model.config.d_model)
    want = model.run_with_cache(tokens, names=["blocks.1.attn.z"], patch={"blocks.1.attn_out": frozen},
                                attention_mask=mask)[0]  # attention computed (z is recorded)
    from minineo.forward import blocks

    calls = []
    for name in ("attend_fused", "attend_explicit"):
        original = getattr(blocks, name)
        monkeypatch.setattr(blocks, name, lambda *a, _o=original, **k: calls.append(1) or _o(*a, **k))
    got = model(tokens, patch={"blocks.1.attn_out": frozen}, attention_mask=mask)
    assert len(calls) == 1  # layer 0 only
    assert torch.equal(got, want)
