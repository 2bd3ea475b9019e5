"""embedding_geometry's closed forms and float32 blocks against float64 brute force; embedding_autoencoding
(block 0 alone) against the full forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from minineo import analysis


def brute_geometry(W: torch.Tensor) -> dict[str, float]:
    """Every pairwise cosine in float64, the full (n, n) matrix."""
    W = W.double()
    n = W.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)

    def cosines(X):
        unit = X / X.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return (unit @ unit.T)[off]

    centred = cosines(W - W.mean(0))
    return {"mean_cosine": float(cosines(W).mean()), "mean_cosine_centred": float(centred.mean()),
            "mean_abs_cosine_centred": float(centred.abs().mean()), "mean_norm": float(W.norm(dim=-1).mean()),
            "std_norm": float(W.norm(dim=-1).std()), "mean_vector_norm": float(W.mean(0).norm())}


def matrices():
    g = torch.Generator().manual_seed(1)
    plain = torch.randn(203, 24, generator=g)
    # GPT-Neo's W_E: a shared offset far larger than the spread, so every raw cosine is near 0.96
    offset = torch.randn(32, generator=g)
    neo_like = offset * 5 + torch.randn(517, 32, generator=g)
    with_zero = torch.randn(130, 8, generator=g)
    with_zero[7] = 0  # a zero row has cosine 0 with everything
    return {"plain": plain, "neo_like": neo_like, "with_zero_row": with_zero}


@pytest.mark.parametrize("name", ["plain", "neo_like", "with_zero_row"])
@pytest.mark.parametrize("chunk", [64, 4096])
def test_geometry_equals_float64_brute_force(name, chunk):
    W = matrices()[name]
    result = analysis.embedding_geometry(W, chunk=chunk)
    expected = brute_geometry(W)
    for key in ("mean_cosine", "mean_cosine_centred", "mean_norm", "std_norm", "mean_vector_norm"):
        assert math.isclose(getattr(result, key), expected[key], rel_tol=1e-9, abs_tol=1e-12), key
    # float32 blocks, float64 total
    assert math.isclose(result.mean_abs_cosine_centred, expected["mean_abs_cosine_centred"], rel_tol=1e-5)
    if name == "neo_like":
        assert result.mean_cosine > 0.9


def test_geometry_of_a_float64_matrix_with_an_offset_keeps_float64_precision():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(64, dtype=torch.float64, generator=g) * 100 + torch.randn(300, 64, dtype=torch.float64, generator=g)
    result, expected = analysis.embedding_geometry(W, chunk=128), brute_geometry(W)
    assert math.isclose(result.mean_cosine, expected["mean_cosine"], rel_tol=1e-12)
    assert math.isclose(result.mean_cosine_centred, expected["mean_cosine_centred"], rel_tol=1e-9)


def test_autoencoding_equals_the_brute_force_full_forward(hf_pair):
    _, model = hf_pair("gpt2", layers=2, heads=4, weight_scale=3.0)
    vocab = model.config.d_vocab
    got = analysis.embedding_autoencoding(model, chunk=40)
    ids = torch.arange(vocab)
    _, cache = model.run_with_cache(ids[:, None], names=["blocks.0.resid_post"])
    from minineo.analysis.embeddings import _ln_final

    views = {"raw": model.W_E @ model.W_U, "ln": _ln_final(model, model.W_E) @ model.W_U,
             "extended": _ln_final(model, cache["blocks.0.resid_post"][:, 0]) @ model.W_U}
    top1 = {view: logits.argmax(-1) for view, logits in views.items()}
    assert round(got.top1_raw * vocab) == int((top1["raw"] == ids).sum())
    assert round(got.top1_ln * vocab) == int((top1["ln"] == ids).sum())
    assert round(got.top1_extended * vocab) == int((top1["extended"] == ids).sum())
    counts = torch.bincount(top1["ln"], minlength=vocab)
    assert [c for _, c in got.most_frequent_winners] == counts.sort(descending=True).values[:10].tolist()


def test_autoencoding_on_a_sample_scores_exactly_those_tokens():
    """A sampled run scores the seeded sample exactly: its raw rate equals brute force over the same ids."""
    import minineo
    from minineo.analysis import embedding_autoencoding

    model = minineo.load()
    vocab = model.config.d_vocab
    whole, also_whole = embedding_autoencoding(model), embedding_autoencoding(model, sample=vocab)
    assert (whole.top1_raw, whole.top1_ln, whole.top1_extended) == (also_whole.top1_raw, also_whole.top1_ln,
                                                                    also_whole.top1_extended)
    assert whole.n_tokens == vocab
    part = embedding_autoencoding(model, sample=100, seed=3)
    ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(3))[:100]
    raw = int(((model.W_E[ids] @ model.W_U).argmax(-1) == ids).sum()) / 100
    assert part.n_tokens == 100 and abs(part.top1_raw - float(raw)) < 1e-12


def test_mean_abs_cosine_on_a_sample_is_that_of_the_sampled_rows():
    from minineo.analysis import embedding_geometry

    W = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) + 2.0
    whole = embedding_geometry(W)
    part = embedding_geometry(W, sample=50, seed=4)
    rows = torch.randperm(300, generator=torch.Generator().manual_seed(4))[:50].sort().values
    unit = (W[rows] - W.mean(0)).double()  # the sampled rows, centred on the whole matrix's mean
    unit = unit / unit.norm(dim=-1, keepdim=True)
    cos = (unit @ unit.T).abs()
    brute = float(cos.triu(1).sum() / (50 * 49 / 2))
    assert abs(part.mean_abs_cosine_centred - brute) < 1e-6
    assert (part.mean_cosine, part.mean_cosine_centred, part.mean_norm) == (whole.mean_cosine,
                                                                            whole.mean_cosine_centred, whole.mean_norm)
