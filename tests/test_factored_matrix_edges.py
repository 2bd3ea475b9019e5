"""FactoredMatrix with vectors as TransformerLens's does it (M @ v and v @ M collapse to tensors), shape errors,
and qk_circuit / ov_circuit indexing out of range as UserErrors. The oracle is the materialised product AB."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo.analysis.circuits import FactoredMatrix, ov_circuit, qk_circuit
from minineo.errors import UserError


def _factors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 5, 2, generator=g, dtype=torch.float64), torch.randn(2, 3, 2, 4, generator=g,
                                                                                  dtype=torch.float64)


def test_matrix_times_vector_is_the_products_matrix_vector_product():
    A, B = _factors()
    v = torch.randn(4, dtype=torch.float64)
    out = FactoredMatrix(A, B) @ v
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 5)
    assert torch.allclose(out, (A @ B) @ v)


def test_vector_times_matrix_is_the_vector_matrix_product():
    A, B = _factors(1)
    v = torch.randn(5, dtype=torch.float64)
    out = v @ FactoredMatrix(A, B)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 4)
    assert torch.allclose(out, v @ (A @ B))


def test_a_float32_vector_meets_the_float64_circuits():
    model = minineo.load()
    ov = ov_circuit(model)[1, 2]
    x = model.W_E[65].detach()  # float32 (d_model,)
    expected = x.double() @ model.blocks[1].attn.W_V[2].double() @ model.blocks[1].attn.W_O[2].double()
    assert torch.allclose(x @ ov, expected)
    assert torch.allclose(ov @ x, (ov.AB @ x.double()))


def test_matrix_products_still_stay_factored():
    A, B = _factors(2)
    X = torch.randn(4, 6, dtype=torch.float64)
    Y = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose((FactoredMatrix(A, B) @ X).AB, A @ B @ X)
    assert torch.allclose((Y @ FactoredMatrix(A, B)).AB, Y @ A @ B)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("size", [3, 6])
def test_a_vector_of_the_wrong_size_is_a_user_error(side, size):
    f = FactoredMatrix(*_factors())  # (2, 3, 5, 4)
    with pytest.raises(UserError, match="do not chain"):
        f @ torch.ones(size) if side == "right" else torch.ones(size) @ f
    with pytest.raises(UserError, match="do not chain"):
        f @ torch.ones(size, 2) if side == "right" else torch.ones(2, size) @ f


def test_a_scalar_or_a_non_tensor_is_a_user_error():
    f = FactoredMatrix(*_factors())
    with pytest.raises(UserError, match="scalar"):
        f @ torch.tensor(2.0)
    with pytest.raises(UserError, match="tensor or a FactoredMatrix"):
        f @ [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("circuit", [qk_circuit, ov_circuit])
@pytest.mark.parametrize("index,match", [((2, 0), r"layer of 2\) is out of range: give 0..1"),
                                         ((0, 4), r"head of 4\) is out of range: give 0..3"),
                                         ((-3, 0), "out of range"), ((0, True), "whole number"),
                                         ((0, 1, 2), "batch dimension"), ((0, 1, 2, 3), "batch dimension")])
def test_indexing_a_circuit_out_of_range_is_a_user_error(circuit, index, match):
    with pytest.raises(UserError, match=match):
        circuit(minineo.load())[index]


def test_in_range_indexing_is_the_heads_circuit():
    model = minineo.load()
    attn = model.blocks[1].attn
    assert torch.allclose(qk_circuit(model)[1, 3].AB, attn.W_Q[3].double() @ attn.W_K[3].double().T)
    assert torch.allclose(ov_circuit(model)[-1, -1].AB, attn.W_V[3].double() @ attn.W_O[3].double())
    assert qk_circuit(model)[0].shape == (4, 128, 128)
