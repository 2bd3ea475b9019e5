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
