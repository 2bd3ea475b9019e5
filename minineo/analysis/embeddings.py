"""Embedding geometry (norms, the shared offset, pairwise cosines) and embedding autoencoding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from minineo.model import Model


@dataclass
class EmbeddingGeometry:
    name: str
    n_vectors: int
    mean_norm: float
    std_norm: float
    mean_vector_norm: float  # norm of the average vector: the shared offset
    mean_cosine: float  # average cosine similarity over all pairs i != j
    mean_cosine_centred: float  # the same after subtracting the mean vector
    mean_abs_cosine_centred: float
    largest_norms: list[tuple[int, float]]  # (index, norm), largest first


def embedding_geometry(W: torch.Tensor, name: str = "W_E", top: int = 10, chunk: int = 2048) -> EmbeddingGeometry:
    """Geometry of the rows of W (n, d). Pairwise means are exact and computed in row chunks, so the
    (n, n) cosine matrix is never held at once."""
    W = W.detach().double()
    norms = W.norm(dim=-1)
    mean = W.mean(0)
    centred = W - mean
    largest = norms.topk(min(top, len(norms)))
    return EmbeddingGeometry(
        name=name, n_vectors=W.shape[0], mean_norm=float(norms.mean()), std_norm=float(norms.std()),
        mean_vector_norm=float(mean.norm()), mean_cosine=_mean_pairwise_cosine(W, chunk, absolute=False),
        mean_cosine_centred=_mean_pairwise_cosine(centred, chunk, absolute=False),
        mean_abs_cosine_centred=_mean_pairwise_cosine(centred, chunk, absolute=True),
        largest_norms=list(zip(largest.indices.tolist(), largest.values.tolist())),
    )


def _mean_pairwise_cosine(W: torch.Tensor, chunk: int, absolute: bool) -> float:
    unit = W / W.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (n, d)
    n, total = unit.shape[0], 0.0
    for start in range(0, n, chunk):
        block = unit[start:start + chunk] @ unit.T  # (chunk, n)
        block = block.abs() if absolute else block
        total += float(block.sum()) - float(block.diagonal(offset=start).sum())  # drop i == j
    return total / (n * (n - 1))


@dataclass
class EmbeddingAutoencoding:
    """Is token t the top logit when its own embedding is unembedded?"""

    top1_raw: float  # argmax(W_E[t] @ W_U) == t
    top1_ln: float  # argmax(ln_final(W_E[t]) @ W_U) == t
    top1_extended: float  # the residual after block 0 (MLP0 included) for the one-token input t
    most_frequent_winners: list[tuple[int, int]]  # (token, how often it wins) for the ln_final view


def embedding_autoencoding(model: Model, chunk: int = 1024, top: int = 10) -> EmbeddingAutoencoding:
    vocab = model.config.d_vocab
    hits = {"raw": 0, "ln": 0, "extended": 0}
    winners: Counter[int] = Counter()
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(start + chunk, vocab), device=model.W_E.device)
        emb = model.W_E[ids]  # (chunk, d_model)
        views = {"raw": emb @ model.W_U, "ln": _ln_final(model, emb) @ model.W_U}
        _, cache = model.run_with_cache(ids[:, None], names=["blocks.0.resid_post"])  # each token alone
        views["extended"] = _ln_final(model, cache["blocks.0.resid_post"][:, 0]) @ model.W_U
        for view, logits in views.items():
            top1 = logits.argmax(-1)
            hits[view] += int((top1 == ids).sum())
            if view == "ln":
                winners.update(top1.tolist())
    return EmbeddingAutoencoding(hits["raw"] / vocab, hits["ln"] / vocab, hits["extended"] / vocab,
                                 winners.most_common(top))


def _ln_final(model: Model, x: torch.Tensor) -> torch.Tensor:
    """The model's own final LayerNorm (its module, so nothing is re-implemented)."""
    from minineo.recording import Recorder

    return model.ln_final(x, Recorder(), "ln_final.")
