"""model.processed(): TransformerLens's weight processing as a transform that leaves the model's predictions alone.

Oracles: the raw model (HF-proven elsewhere) on the same tokens; closed-form invariants (a LayerNorm's output
does not see the mean of its input, so every processed residual is the raw one centred, and q, k, the
patterns and mlp.pre are unchanged); float64, where the transform is exact to round-off.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from safetensors import safe_open
from safetensors.torch import load_file
from strategies import gpt2_shapes, neo_shapes

import minineo
from minineo import analysis


def tokens_for(model, batch: int = 2, pos: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.d_vocab, (batch, pos), generator=g)


def log_probs(model, tokens, **kwargs) -> torch.Tensor:
    return model(tokens, **kwargs).log_softmax(-1)


@settings(max_examples=8)
@given(shape=gpt2_shapes())
def test_processed_gpt2_has_the_raw_log_softmax_and_logits_without_center_unembed(hf_pair, shape):
    _, model = hf_pair("gpt2", **shape)
    tokens = tokens_for(model, pos=20)
    assert_close(log_probs(model.processed(), tokens), log_probs(model, tokens), "log_softmax")
    assert_close(model.processed(center_unembed=False)(tokens), model(tokens), "logits")


@settings(max_examples=8)
@given(shape=neo_shapes())
def test_processed_gpt_neo_has_the_raw_log_softmax_and_logits_without_center_unembed(hf_pair, shape):
    _, model = hf_pair("gpt_neo", **shape)
    tokens = tokens_for(model, pos=30)  # longer than most drawn windows
    assert_close(log_probs(model.processed(), tokens), log_probs(model, tokens), "log_softmax")
    assert_close(model.processed(center_unembed=False)(tokens), model(tokens), "logits")


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_processing_is_exact_in_float64_on_padded_batches(hf_pair, tmp_path, arch):
    _, model = hf_pair(arch, layers=3, window=3, kinds=["local", "global", "local"] if arch == "gpt_neo" else None)
    model = model.to(torch.float64)
    tokens = tokens_for(model, batch=3, pos=10)
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0  # a left-padded row
    real = mask.bool()
    for kwargs in ({}, {"fold_ln": False}, {"center_writing_weights": False}, {"fold_value_biases": False}):
        other = model.processed(center_unembed=False, **kwargs)
        diff = (other(tokens, attention_mask=mask) - model(tokens, attention_mask=mask))[real].abs().max()
        assert diff < 1e-10, (kwargs, float(diff))
    diff = (log_probs(model.processed(), tokens, attention_mask=mask)
            - log_probs(model, tokens, attention_mask=mask))[real].abs().max()
    assert diff < 1e-10


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_processed_residuals_are_the_raw_ones_centred_and_what_layernorm_reads_is_unchanged(hf_pair, arch):
    _, model = hf_pair(arch, layers=3, window=4)
    model = model.to(torch.float64)
    tokens = tokens_for(model, pos=12)
    _, raw = model.run_with_cache(tokens)
    _, new = model.processed().run_with_cache(tokens)
    for layer in range(3):
        for site in ("resid_pre", "resid_mid", "resid_post"):
            name = f"blocks.{layer}.{site}"
            expected = raw[name] - raw[name].mean(-1, keepdim=True)
            assert (new[name] - expected).abs().max() < 1e-10, name
        # the LayerNorms' inputs lose only their mean: their normalised outputs and what reads them agree
        for site in ("ln1.normalized", "ln2.normalized", "attn.q", "attn.k", "attn.pattern", "mlp.pre"):
            name = f"blocks.{layer}.{site}"
            assert (new[name] - raw[name]).abs().max() < 1e-10, name
    assert (new["ln_final.scale"] - raw["ln_final.scale"]).abs().max() < 1e-10


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_centred_weights_have_zero_mean(hf_pair, arch):
    _, model = hf_pair(arch, layers=2)
    p = model.processed()
    writers = [p.W_E, p.W_pos] + [w for b in p.blocks for w in (b.attn.W_O, b.attn.b_O, b.mlp.W_out, b.mlp.b_out)]
    for W in writers:  # over d_model
        assert W.mean(-1).abs().max() < 1e-6
    readers = [p.W_U] + [w for b in p.blocks for w in (b.attn.W_Q, b.attn.W_K, b.attn.W_V)] + [b.mlp.W_in for b in p.blocks]
    for W in readers:  # fold_ln centres the weights that read a LayerNorm, over d_model
        assert W.mean(-2).abs().max() < 1e-6
    assert p.W_U.mean(-1).abs().max() < 1e-6 and abs(float(p.b_U.mean())) < 1e-6  # center_unembed: over d_vocab
    for block in p.blocks:
        assert torch.equal(block.attn.b_V, torch.zeros_like(block.attn.b_V))  # fold_value_biases
    # the raw weights stay centred only where they were
    assert model.W_E.mean(-1).abs().max() > 1e-4


def test_differences_are_config_values_and_the_raw_model_is_untouched(hf_pair):
    _, neo = hf_pair("gpt_neo", layers=2)
    before = {name: t.clone() for name, t in neo.state_dict().items()}
    p = neo.processed()
    assert not neo.config.qkv_bias and p.config.qkv_bias  # fold_ln gives GPT-Neo q/k/v biases
    assert p.config.unembed_bias and not p.config.ln_weights and not p.config.tie_unembed
    assert not any(".ln" in name or name.startswith("ln_final") for name in p.state_dict())
    assert neo.b_U is None and p.b_U.shape == (neo.config.d_vocab,)
    assert all(torch.equal(before[name], t) for name, t in neo.state_dict().items())
    assert neo.config.tie_unembed and neo.W_U_untied is None
    # only fold_value_biases on GPT-Neo: nothing to fold (no b_V), nothing changes
    same = neo.processed(fold_ln=False, center_writing_weights=False, center_unembed=False)
    assert same.config == neo.config
    assert all(torch.equal(before[name], t) for name, t in same.state_dict().items())


def test_processing_twice_equals_processing_once(hf_pair):
    _, model = hf_pair("gpt2", layers=2)
    once, twice = model.processed(), model.processed().processed()
    assert once.config == twice.config
    for name, value in once.state_dict().items():
        assert_close(twice.state_dict()[name], value, name, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_fast_and_explicit_paths_agree_on_the_processed_model(hf_pair, arch):
    _, model = hf_pair(arch, layers=3, window=3)
    p = model.processed()
    tokens = tokens_for(model, pos=16)
    assert_close(p(tokens), p(tokens, explicit=True), "logits")
    logits, cache = p.run_with_cache(tokens)
    assert_close(logits, p(tokens), "run_with_cache logits")
    patched = p(tokens, patch={"blocks.1.ln1.normalized": lambda x: x})  # the recorded LayerNorm branch
    assert_close(patched, p(tokens), "patched LayerNorm")


def test_analyses_work_on_the_processed_embedded_model():
    model = minineo.load()
    p = model.processed()
    tokens = model.to_tokens("When Mary and John went to the store, John gave a drink to")
    logits, cache = p.run_with_cache(tokens)
    parts, _ = cache.decompose_resid()
    assert_close(parts.sum(0), cache[f"blocks.{p.config.n_layers - 1}.resid_post"], "residual decomposition")
    answer, wrong = model.to_tokens(" M", prepend_bos=False)[0, -1], model.to_tokens(" J", prepend_bos=False)[0, -1]
    dla = analysis.direct_logit_attribution(p, tokens, int(answer), int(wrong))
    assert_close(dla.contributions.sum(0) + dla.ln_bias_term, dla.logit, "DLA sums to the logit difference")
    # the processed logit difference is the raw one (center_unembed shifts every logit by the same amount)
    raw_logits = model(tokens)
    assert_close(dla.logit, raw_logits[:, -1, answer] - raw_logits[:, -1, wrong], "logit difference")
    lens = analysis.logit_lens(p, tokens)
    assert lens.top_tokens.shape[0] == p.config.n_layers + 1
    assert torch.equal(lens.top_tokens[-1], logits[0].argmax(-1))
    # decoding with the key/value cache adds b_U too: greedy generation is the raw model's
    assert torch.equal(p.generate(tokens, max_new_tokens=8), model.generate(tokens, max_new_tokens=8))


def test_processed_bfloat16_model_keeps_the_raw_layout_and_dtype():
    model = minineo.load(dtype=torch.bfloat16)
    p = model.processed()
    assert p.W_E.dtype == torch.bfloat16 and p.blocks[0].ln1.w.dtype == torch.bfloat16
    assert p.blocks[0].attn.W_QKV.stride() == model.blocks[0].attn.W_QKV.stride()
    assert p.W_U.stride() == model.W_U.stride()
    tokens = model.to_tokens("abcabc")
    ref = minineo.load().processed()(tokens).log_softmax(-1)
    assert (p(tokens).float().log_softmax(-1) - ref).abs().max() < 0.5  # bfloat16 round-off, not a wrong model


# ---- TransformerLens 3.9's own processed parameters (tests/data/tl3_processing, written by the package) -------

TL3 = Path(__file__).parent / "data" / "tl3_processing"


def tl_named_parameters(model) -> dict[str, torch.Tensor]:
    """minineo's parameters under TransformerLens's state-dict names."""
    named = {"embed.W_E": model.W_E, "pos_embed.W_pos": model.W_pos, "unembed.W_U": model.W_U, "unembed.b_U": model.b_U}
    for layer, block in enumerate(model.blocks):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            named[f"blocks.{layer}.attn.{name}"] = getattr(block.attn, name)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            named[f"blocks.{layer}.mlp.{name}"] = getattr(block.mlp, name)
    return named


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_processed_parameters_equal_transformer_lens_3_9s_from_pretrained(arch):
    expected = load_file(str(TL3 / arch / "expected.safetensors"))
    with safe_open(str(TL3 / arch / "expected.safetensors"), "pt") as f:
        assert f.metadata()["transformer_lens"].startswith("3.9")
    model = minineo.load(TL3 / arch / "model").processed()
    ours = tl_named_parameters(model)
    theirs = {name for name in expected if name.startswith(("blocks.", "embed.", "pos_embed.", "unembed."))}
    assert theirs == set(ours)  # TransformerLens's LNPre model has no LayerNorm parameters either
    for name in sorted(theirs):
        assert_close(ours[name], expected[name], name, atol=1e-6)
    assert_close(model(expected["tokens"]), expected["logits"], "logits", atol=1e-6)
