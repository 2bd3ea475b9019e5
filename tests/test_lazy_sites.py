"""Sites computed on access (minineo.record.lazy_sites). attn.scores and attn.pattern: run_with_cache keeps every
layer on the fused kernel, and what the Cache computes from the recorded q and k is exactly what the explicit
path computes. Normalised residuals, resid_mid and mlp.post: exactly what the forward computed and used."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from safetensors.torch import load_file

import minineo.forward.blocks


def padded_tokens(pos=11):
    tokens = torch.randint(0, 97, (2, pos), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0  # a left-padded row: the recomputation must use the forward's own mask
    return tokens, mask


def identity_patches(model, site):
    return {f"blocks.{layer}.attn.{site}": (lambda x: x) for layer in range(model.config.n_layers)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_lazy_pattern_and_scores_equal_the_explicit_paths_bit_for_bit(hf_pair, arch, dtype):
    # window 3 < 11 positions: GPT-Neo's local layers have a real window
    model = hf_pair(arch, layers=3, window=3, weight_scale=3.0)[1].to(dtype)
    tokens, mask = padded_tokens()
    # explicit=True on both runs so that both see the same q and k; the second keeps what that path computed
    _, lazy = model.run_with_cache(tokens, attention_mask=mask, explicit=True)
    _, kept = model.run_with_cache(tokens, attention_mask=mask, explicit=True,
                                   patch=identity_patches(model, "pattern") | identity_patches(model, "scores"))
    for layer in range(model.config.n_layers):
        for site in ("pattern", "scores"):
            name = f"blocks.{layer}.attn.{site}"
            assert name in lazy._lazy and name not in kept._lazy  # computed on access vs stored
            assert lazy[name].dtype == kept[name].dtype
            assert torch.equal(lazy[name], kept[name]), name


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_run_with_cache_stays_fused_and_pattern_times_v_is_the_recorded_z(hf_pair, arch, monkeypatch):
    model = hf_pair(arch, layers=3, window=3, weight_scale=3.0)[1]
    calls = []
    explicit = minineo.forward.blocks.attend_explicit
    monkeypatch.setattr(minineo.forward.blocks, "attend_explicit", lambda *a: calls.append(a[-1]) or explicit(*a))
    tokens, mask = padded_tokens()
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    # every layer as the fast path runs it: the fused kernel, or for GPT-Neo HF eager's operations (eager_attention)
    assert calls == ([f"blocks.{layer}.attn." for layer in range(model.config.n_layers)]
                     if model.config.eager_attention else [])
    assert_close(logits, model(tokens, attention_mask=mask), "run_with_cache vs fast path")
    for layer in range(model.config.n_layers):
        pattern, v = cache["pattern", layer], cache["v", layer]  # (batch, head, q, k), (batch, pos, head, d_head)
        z = torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2)
        assert_close(z, cache["z", layer], f"pattern @ v vs z, layer {layer}")


def test_a_patched_pattern_forces_the_explicit_path_for_its_layer_only(hf_pair, monkeypatch):
    """On GPT-2, whose fast path runs SDPA's fused kernel (GPT-Neo's runs the explicit operations everywhere)."""
    model = hf_pair("gpt2", layers=3, weight_scale=3.0)[1]
    calls = []
    explicit = minineo.forward.blocks.attend_explicit
    monkeypatch.setattr(minineo.forward.blocks, "attend_explicit", lambda *a: calls.append(a[-1]) or explicit(*a))
    tokens, _ = padded_tokens()
    uniform = torch.tril(torch.ones(11, 11))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, model.config.n_heads, 11, 11)
    logits, cache = model.run_with_cache(tokens, patch={"blocks.1.attn.pattern": uniform})
    assert calls == ["blocks.1.attn."]
    assert "blocks.1.attn.pattern" not in cache._lazy and torch.equal(cache["pattern", 1], uniform)
    assert_close(logits, model(tokens, patch={"blocks.1.attn.pattern": uniform}, explicit=True), "patched")
    assert not torch.allclose(logits, model(tokens), atol=1e-3)  # the patch did something


def test_lazy_sites_behave_like_stored_ones(hf_pair, tmp_path):
    model = hf_pair("gpt2", layers=2)[1]
    tokens, _ = padded_tokens()
    _, cache = model.run_with_cache(tokens)
    names = list(cache)
    assert len(names) == len(cache) == len(set(names))
    for layer in range(2):
        for site in ("pattern", "scores", "hook_pattern", "hook_attn_scores"):
            assert f"blocks.{layer}.attn.{site}" in cache
        assert f"blocks.{layer}.attn.pattern" in names and f"blocks.{layer}.attn.q" in names
    stacked = cache.stack("pattern")
    assert stacked.shape == (2, 2, model.config.n_heads, 11, 11)
    assert torch.equal(stacked[1], cache["blocks.1.attn.pattern"])
    cache.save(tmp_path / "cache.safetensors")
    saved = load_file(tmp_path / "cache.safetensors")
    assert set(saved) == set(names)
    assert torch.equal(saved["blocks.0.attn.pattern"], cache["blocks.0.attn.pattern"])
    # only q and k asked for the pattern: they are kept for the recomputation but not listed
    _, only = model.run_with_cache(tokens, names=["blocks.0.attn.pattern"])
    assert list(only) == ["blocks.0.attn.pattern"] and len(only) == 1 and "blocks.0.attn.q" not in only
    assert torch.equal(only["pattern", 0], cache["pattern", 0])
    assert torch.equal(only.to("cpu")["pattern", 0], cache["pattern", 0])


OTHER_LAZY = ("ln1.normalized", "resid_mid", "ln2.normalized", "mlp.post")


def stored_by_identity_patch(model, tokens, mask, name):
    """The site as the same full recording run computed it, kept: an identity patch makes a site stored."""
    _, cache = model.run_with_cache(tokens, attention_mask=mask, patch={name: lambda x: x})
    assert name not in cache._lazy
    return cache[name]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_lazy_residual_and_mlp_sites_equal_what_the_forward_computed_bit_for_bit(hf_pair, arch, dtype):
    model = hf_pair(arch, layers=3, window=3, weight_scale=3.0)[1].to(dtype)
    tokens, mask = padded_tokens()
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    names = [f"blocks.{layer}.{site}" for layer in range(3) for site in OTHER_LAZY] + ["ln_final.normalized"]
    for name in names:
        assert name in cache._lazy and name not in cache._store, name  # not kept: computed on access
        expected = stored_by_identity_patch(model, tokens, mask, name)
        assert cache[name].dtype == expected.dtype == dtype
        assert torch.equal(cache[name], expected), name
    # and the recorded run is the same forward pass: mlp.post is HF's formula there, as the lazy value is
    assert torch.equal(logits, model.run_with_cache(tokens, attention_mask=mask, patch={
        f"blocks.{layer}.mlp.post": (lambda x: x) for layer in range(3)})[0])


def test_lazy_sites_follow_the_patched_inputs_and_a_patched_site_is_stored(hf_pair):
    model = hf_pair("gpt2", layers=2)[1]
    tokens, mask = padded_tokens()
    doubled = {"blocks.1.resid_pre": lambda x: 2 * x, "blocks.0.mlp.pre": lambda x: x - 1}
    _, cache = model.run_with_cache(tokens, patch=doubled)
    for name in ("blocks.1.resid_mid", "blocks.1.ln1.normalized", "blocks.0.mlp.post"):
        assert name in cache._lazy
        assert torch.equal(cache[name], stored_by_identity_patch_with(model, tokens, name, doubled))
    zero = {"blocks.0.mlp.post": lambda x: x * 0, "blocks.1.ln2.normalized": lambda x: x * 0}
    logits, cache = model.run_with_cache(tokens, patch=zero)
    for name in zero:
        assert name not in cache._lazy and not cache[name].any()
    assert not torch.allclose(logits, model(tokens), atol=1e-3)


def stored_by_identity_patch_with(model, tokens, name, patch):
    _, cache = model.run_with_cache(tokens, patch=patch | {name: lambda x: x})
    return cache[name]


def test_lazy_sites_from_a_later_layer_and_with_selected_logits(hf_pair):
    model = hf_pair("gpt_neo", layers=3, window=3)[1]
    tokens, _ = padded_tokens()
    _, full = model.run_with_cache(tokens)
    _, later = model.run_from(1, full["blocks.1.resid_pre"], names=True)
    assert "blocks.0.ln1.normalized" not in later and "blocks.0.attn.pattern" not in later  # layer 0 did not run
    for name in ("blocks.1.ln1.normalized", "blocks.2.mlp.post", "blocks.2.attn.pattern", "ln_final.normalized"):
        assert name in later and torch.equal(later[name], full[name]), name
    _, nothing = model.run_from(1, full["blocks.1.resid_pre"], names=["blocks.0.ln1.normalized"])
    assert len(nothing) == 0 and list(nothing) == [] and "blocks.0.ln1.normalized" not in nothing
    last = torch.zeros(tokens.shape, dtype=torch.bool)
    last[:, -1] = True
    _, selected = model.run_from(1, full["blocks.1.resid_pre"], names=True, logits_at=last)
    assert torch.equal(selected["ln_final.normalized"], full["ln_final.normalized"][:, -1])


def test_every_lazy_kind_is_listed_stacked_and_saved_like_a_stored_site(hf_pair, tmp_path):
    model = hf_pair("gpt2", layers=2)[1]
    tokens, _ = padded_tokens()
    _, cache = model.run_with_cache(tokens)
    names = list(cache)
    assert names.index("blocks.0.ln1.normalized") < names.index("blocks.0.attn.q") < names.index("blocks.0.resid_mid")
    for site in OTHER_LAZY:
        assert torch.equal(cache.stack(site)[1], cache[f"blocks.1.{site}"])
    cache.save(tmp_path / "c.safetensors")
    saved = load_file(tmp_path / "c.safetensors")
    assert set(saved) == set(names)
    assert torch.equal(saved["blocks.1.mlp.post"], cache["blocks.1.mlp.post"])
    # a single lazy name keeps only its inputs, unlisted
    _, only = model.run_with_cache(tokens, names=["blocks.1.ln2.normalized"])
    assert list(only) == ["blocks.1.ln2.normalized"] and "blocks.1.resid_mid" not in only
    # (not bit-equal: that run used the fused GELU in layer 0, whose mlp.post nobody asked for)
    assert_close(only["blocks.1.ln2.normalized"], cache["blocks.1.ln2.normalized"], "ln2.normalized alone")
