"""Circuits on the weights: FactoredMatrix, composition scores, copying scores.

Oracles: the dense products and torch.linalg on them (small models, where d_vocab x d_vocab fits), TransformerLens
3.9's own `all_composition_scores` and Main_Demo copying score (tests/data/tl3_processing, written by the package),
and on the embedded models the previous-token heads found from attention patterns (analysis.head_scores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_close
from safetensors.torch import load_file

import minineo
from minineo import analysis
from minineo.analysis.circuits import FactoredMatrix, ov_circuit, qk_circuit
from minineo.errors import UserError

TL3 = Path(__file__).parent / "data" / "tl3_processing"


def random_factors(*batch, m=7, r=3, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, m, r, generator=g, dtype=torch.float64),
            torch.randn(*batch, r, n, generator=g, dtype=torch.float64))


def test_factored_matrix_norm_svd_and_products_equal_the_dense_ones():
    A, B = random_factors(2, 3)
    f = FactoredMatrix(A, B)
    dense = A @ B
    assert f.shape == dense.shape and torch.equal(f.AB, dense)
    assert_close(f.norm(), torch.linalg.matrix_norm(dense), "norm")
    U, S, V = f.svd()
    assert_close(U @ torch.diag_embed(S) @ V.transpose(-2, -1), dense, "U S V^T")
    assert_close(S, torch.linalg.svdvals(dense)[..., :3], "singular values")
    assert_close(U.transpose(-2, -1) @ U, torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3), "U orthonormal")
    C = torch.randn(5, 4, dtype=torch.float64)
    assert (f @ C.float()).B.dtype == torch.float64  # a float32 tensor joins the float64 factors
    assert_close((f @ C).AB, dense @ C, "f @ tensor")
    D = torch.randn(6, 7, dtype=torch.float64)
    assert_close((D @ f).AB, D @ dense, "tensor @ f")
    other = FactoredMatrix(*random_factors(2, 3, m=5, r=2, n=4, seed=1))
    assert_close((f @ other).AB, dense @ other.AB, "f @ factored")
    assert (f @ other).A.shape[-1] == 2  # the smaller inner dimension is kept
    assert_close(f.T.AB, dense.transpose(-2, -1), "transpose")
    assert_close(f[1, 2].AB, dense[1, 2], "indexing the batch")


def test_eigenvalues_are_the_nonzero_eigenvalues_of_the_product():
    A, B = random_factors(4, m=9, r=3, n=9)
    f = FactoredMatrix(A, B)
    small = f.eigenvalues()  # (4, 3)
    dense = torch.linalg.eigvals(f.AB)  # (4, 9): six of them are zero
    for row_small, row_dense in zip(small, dense):
        top = row_dense[row_dense.abs().argsort(descending=True)[:3]]
        assert_close(torch.sort(top.real).values, torch.sort(row_small.real).values, "eigenvalues (real)")
        assert_close(row_small.abs().sum(), row_dense.abs().sum(), "sum |eigenvalue|")
        assert_close(row_small.sum().real, row_dense.sum().real, "trace")


def test_factored_matrix_errors_are_clear():
    with pytest.raises(UserError, match="do not chain"):
        FactoredMatrix(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(UserError, match="square"):
        FactoredMatrix(torch.zeros(3, 2), torch.zeros(2, 4)).eigenvalues()


def dense_circuits(model):
    """(layer, head, d_model, d_model) dense QK and OV circuits, float64."""
    W = {name: torch.stack([getattr(b.attn, name) for b in model.blocks]).double() for name in ("W_Q", "W_K", "W_V", "W_O")}
    return W["W_Q"] @ W["W_K"].transpose(-2, -1), W["W_V"] @ W["W_O"]


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
@pytest.mark.parametrize("processed", [False, True])
def test_composition_scores_equal_the_dense_computation(hf_pair, arch, processed):
    _, model = hf_pair(arch, layers=3, heads=4, d_head=8)
    model = model.processed() if processed else model
    QK, OV = dense_circuits(model)
    assert_close(qk_circuit(model).AB, QK, "QK")
    assert_close(ov_circuit(model).AB, OV, "OV")
    norm = torch.linalg.matrix_norm
    later = torch.arange(3)[:, None, None, None] < torch.arange(3)[None, None, :, None]  # (l1, 1, l2, 1)
    later = later.expand(3, 4, 3, 4)
    for kind in "qkv":
        right = {"q": QK, "k": QK.transpose(-2, -1), "v": OV}[kind]  # (layer, head, d_model, d_model)
        product = OV[:, :, None, None] @ right[None, None]  # every (sender, receiver) pair, dense
        expected = norm(product) / (norm(OV)[:, :, None, None] * norm(right)[None, None])
        scores = analysis.composition_scores(model, kind)
        with_nan = analysis.composition_scores(model, kind, fill=float("nan"))
        assert scores.shape == (3, 4, 3, 4)
        assert (scores.double()[later] - expected[later]).abs().max() < 1e-6, kind
        assert torch.equal(with_nan[later], scores[later])
        assert (scores[~later] == 0).all() and torch.isnan(with_nan[~later]).all()  # head 2 cannot read head 1


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
@pytest.mark.parametrize("processed", [False, True])
def test_copying_scores_equal_the_dense_full_ov_circuit_eigenvalues(hf_pair, arch, processed):
    _, model = hf_pair(arch, layers=2, heads=4, d_head=8, vocab=97)
    model = model.processed() if processed else model
    _, OV = dense_circuits(model)
    full = model.W_E.double() @ OV @ model.W_U.double()  # (layer, head, d_vocab, d_vocab): small here
    eigenvalues = torch.linalg.eigvals(full)
    expected = eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)
    assert_close(analysis.copying_scores(model).double(), expected, "copying scores", atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_scores_equal_transformer_lens_3_9s_on_its_processed_model(arch):
    expected = load_file(str(TL3 / arch / "expected.safetensors"))
    model = minineo.load(TL3 / arch / "model").processed()  # TransformerLens scores its processed weights
    for kind in "qkv":
        assert_close(analysis.composition_scores(model, kind), expected[f"composition.{kind}"], kind, atol=1e-6)
    assert_close(analysis.copying_scores(model), expected["copying"], "copying", atol=1e-6)


def test_unknown_composition_kind_is_a_clear_error():
    with pytest.raises(UserError, match="kind='Z' is not one of 'q', 'k', 'v'; the composition kind: 'q' \\(queries\\), "
                                        "'k' \\(keys\\) or 'v' \\(values\\)"):
        analysis.composition_scores(minineo.load(), "Z")


@pytest.mark.parametrize("name", ["tiny-neo", "tiny-gpt2"])
@pytest.mark.parametrize("processed", [False, True])
def test_the_strongest_induction_head_k_composes_most_with_the_previous_token_heads(name, processed):
    """Elhage et al. (2021): an induction head's keys read the previous-token head's output. Checked on
    the strongest induction head of each trained toy: every layer-0 head that attends to the previous
    token (score > 0.25; uniform attention over ~50 keys gives ~0.05) composes with its keys more than
    every other layer-0 head. tiny-gpt2 spreads the job over two heads (L0H2 0.55, L0H0 0.34, of the
    9000-step weights) and either may be the top partner; a second induction head may read several
    layer-0 heads about equally (tiny-neo's L1H1, see the README)."""
    model = minineo.load(name)
    patterns = analysis.head_scores(model, analysis.repeated_tokens(model, seq_len=25, low=32, high=127), repeated_len=25)
    previous = patterns.previous_token[0] > 0.25  # (layer-0 head,): the previous-token heads
    assert patterns.previous_token[0].max() > 0.4 and not previous.all(), patterns.previous_token
    head = int(patterns.induction[1].argmax())
    assert patterns.induction[1, head] > 0.5
    weights = model.processed() if processed else model
    partners = analysis.composition_scores(weights, "k")[0, :, 1, head]  # (layer-0 head,)
    assert partners[previous].min() > partners[~previous].max(), (head, patterns.previous_token[0], partners)
    print(f"{name}: L1H{head}'s K-composition with the previous-token heads "
          f"{[f'L0H{i}' for i in previous.nonzero().flatten().tolist()]}: {partners[previous].tolist()}, "
          f"with the others: {partners[~previous].tolist()}")
