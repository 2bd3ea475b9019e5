"""The sixth newcomer pass: FactoredMatrix len/iter and its eigenvalue message, the key/value cache's errors,
names and patches beyond stop_at_layer, negative layers in run_from and cache[site, layer]."""

import pytest
import torch

import minineo
from minineo import analysis
from minineo.analysis.circuits import FactoredMatrix
from minineo.errors import UnknownNameError, UserError


@pytest.fixture(scope="module")
def model():
    return minineo.load()


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens("Hello world")


# ---- 1. FactoredMatrix iterates over its first batch dimension ------------------------------------------------

def test_factored_matrix_len_and_iteration(model):
    ov = analysis.ov_circuit(model)
    assert len(ov) == model.config.n_layers
    layers = list(ov)
    assert len(layers) == model.config.n_layers
    for i, layer in enumerate(layers):
        assert layer.shape == ov[i].shape
        torch.testing.assert_close(layer.AB, ov[i].AB)
    assert [len(layer) for layer in ov] == [model.config.n_heads] * model.config.n_layers


def test_factored_matrix_without_batch_has_no_len():
    m = FactoredMatrix(torch.randn(3, 2), torch.randn(2, 4))
    with pytest.raises(UserError, match="no batch dimension"):
        len(m)
    with pytest.raises(TypeError, match="no batch dimension"):
        list(m)


# ---- 2. the eigenvalue message names AB's shape as AB's ------------------------------------------------------

def test_eigenvalues_message_names_the_product():
    with pytest.raises(UserError) as info:
        FactoredMatrix(torch.randn(3, 4), torch.randn(4, 6)).eigenvalues()
    message = str(info.value)
    assert "AB is (3, 6)" in message and "(4, 4)" in message
    assert "BA needs a square product; this one is (3, 6)" not in message


# ---- 3. the key/value-cache API's errors --------------------------------------------------------------------

def test_decode_position_ids_of_the_wrong_shape(model):
    with pytest.raises(UserError, match=r"position_ids \(1, 5\) do not match tokens \(1, 3\)"):
        model.decode(model.to_tokens("Hi"), model.kv_cache(1, 5), torch.arange(5)[None])
    kv = model.kv_cache(1, 5)  # the right shapes still decode as the forward does
    hi = model.to_tokens("Hi")
    torch.testing.assert_close(model.decode(hi, kv, torch.arange(3)[None]), model(hi)[:, -1], atol=1e-4, rtol=1e-4)


def test_decode_batch_differs_from_the_cache(model):
    with pytest.raises(UserError, match="batch=2"):
        model.decode(model.to_tokens("Hi"), model.kv_cache(2, 5), torch.arange(3)[None])


def test_decode_overflow_is_a_user_error(model):
    tokens = model.to_tokens("Hello world")
    with pytest.raises(UserError, match="max_len=5.*12 new tokens do not fit"):
        model.decode(tokens, model.kv_cache(1, 5), torch.arange(12)[None])


def test_kv_cache_longer_than_the_context(model):
    with pytest.raises(UserError, match=f"max_len=500.*n_ctx={model.config.n_ctx}"):
        model.kv_cache(1, 500)


def test_run_from_overflows_the_cache(model, tokens):
    _, cache = model.run_with_cache(tokens, names=["blocks.0.resid_pre"])
    with pytest.raises(UserError, match="max_len=5"):
        model.run_from(0, cache["blocks.0.resid_pre"], kv=model.kv_cache(1, 5))


# ---- 4. names and patches beyond stop_at_layer -----------------------------------------------------------------

def test_names_beyond_stop_at_layer_are_refused(model, tokens):
    with pytest.raises(UserError, match=r"\['blocks.1.attn.pattern', 'logits'\] never run with stop_at_layer=1"):
        model.run_with_cache(tokens, names=["blocks.1.attn.pattern", "logits"], stop_at_layer=1)
    with pytest.raises(UserError, match="blocks.1.resid_pre"):
        model.run_with_cache(tokens, names="blocks.1.resid_pre", stop_at_layer=1)
    # what runs is recorded; a predicate or names=None keeps recording only what ran, as documented
    _, cache = model.run_with_cache(tokens, names=["blocks.0.attn.pattern", "embed"], stop_at_layer=1)
    assert set(cache) == {"embed", "blocks.0.attn.pattern"}
    _, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("pattern"), stop_at_layer=1)
    assert list(cache) == ["blocks.0.attn.pattern"]
    _, cache = model.run_with_cache(tokens, stop_at_layer=1)
    assert "blocks.0.resid_post" in cache and "blocks.1.resid_pre" not in cache


def test_patches_beyond_stop_at_layer_are_refused(model, tokens):
    with pytest.raises(UserError, match=r"patch: \['blocks.1.attn.z'\] never run with stop_at_layer=1"):
        model(tokens, patch={"blocks.1.attn.z": lambda z: z * 0}, stop_at_layer=1)
    with pytest.raises(UserError, match="patch: .*blocks.1.attn.z"):
        model.run_with_cache(tokens, names=["embed"], patch={"blocks.1.attn.z": lambda z: z * 0}, stop_at_layer=-1)
    out = model(tokens, patch={"blocks.0.attn.z": lambda z: z * 0}, stop_at_layer=1)  # a site that runs: applied
    assert not torch.allclose(out, model(tokens, stop_at_layer=1))


# ---- 5. negative layers ------------------------------------------------------------------------------------------

def test_run_from_negative_layer(model, tokens):
    last = model.config.n_layers - 1
    _, cache = model.run_with_cache(tokens)
    resid = cache[f"blocks.{last}.resid_pre"]
    torch.testing.assert_close(model.run_from(-1, resid), model.run_from(last, resid))
    with pytest.raises(UserError, match=f"layer must be in -{model.config.n_layers}..-1"):
        model.run_from(-model.config.n_layers - 1, resid)


def test_cache_negative_layer(model, tokens):
    last = model.config.n_layers - 1
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["pattern", -1], cache["pattern", last])
    torch.testing.assert_close(cache["resid_pre", -model.config.n_layers], cache["blocks.0.resid_pre"])
    assert ("pattern", -1) in cache
    with pytest.raises(UnknownNameError, match="does not exist"):
        cache["pattern", -model.config.n_layers - 1]
