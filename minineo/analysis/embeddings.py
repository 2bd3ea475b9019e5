"""Embedding geometry (norms, the shared offset, pairwise cosines) and embedding autoencoding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from minineo import checks, progress
from minineo.errors import UserError
from minineo.forward.model import Model


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


@checks.typed
def embedding_geometry(W: torch.Tensor, name: str = "W_E", top: int = 10, chunk: int = 4096,
                       sample: int | None = None, seed: int = 0) -> EmbeddingGeometry:
    """Geometry of the rows of W (n, d).

    Norms, the mean vector and both mean cosines are exact in float64 and O(n d): the mean pairwise cosine
    is (|sum of unit rows|^2 - sum of |unit row|^2) / (n (n - 1)). The mean |cos| has no closed form: it
    is summed over (chunk, chunk) float32 blocks of the upper triangle into a float64 total, so the
    (n, n) matrix is never held. It costs O(n^2 d) (GPT-2's W_E: ~2 TFLOP); `sample` computes it over
    the pairs of a seeded random sample of that many rows instead (an estimate; everything else stays exact).
    """
    W = checks.tensor(W, f"W ({name})", (None, None), dims="(n, d)").detach()
    n, d = W.shape
    if n < 2 or d < 1 or not W.is_floating_point():
        raise UserError(f"W ({name}) must be a float matrix of at least 2 rows (pairwise cosines), got "
                        f"{checks.describe(W)}")
    top, chunk = checks.count(top, "top"), checks.count(chunk, "chunk")
    norms = torch.cat([W[s:s + chunk].double().norm(dim=-1) for s in range(0, n, chunk)])  # (n,)
    mean = sum(W[s:s + chunk].double().sum(0) for s in range(0, n, chunk)) / n  # (d,)
    mean_cosine, _ = _closed_form_cosine(W, None, chunk, keep=False)
    mean_cosine_centred, centred_unit = _closed_form_cosine(W, mean, chunk, keep=True)
    largest = norms.topk(min(top, n))
    return EmbeddingGeometry(
        name=name, n_vectors=n, mean_norm=float(norms.mean()), std_norm=float(norms.std()),
        mean_vector_norm=float(mean.norm()), mean_cosine=mean_cosine, mean_cosine_centred=mean_cosine_centred,
        mean_abs_cosine_centred=_mean_abs_cosine(_rows_sample(centred_unit, sample, seed), chunk,
                                                 f"mean |cos| of {name} (centred)"),
        largest_norms=list(zip(largest.indices.tolist(), largest.values.tolist())),
    )


def _rows_sample(rows: torch.Tensor, sample: int | None, seed: int) -> torch.Tensor:
    """A seeded random sample of `sample` rows (all of them when None or when there are no more)."""
    if sample is None or sample >= rows.shape[0]:
        return rows
    if sample < 2:
        raise UserError(f"sample must be >= 2 rows (pairs are needed) or None for all, got {sample}")
    index = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))[:sample].sort().values
    return rows[index.to(rows.device)]


def _closed_form_cosine(
    W: torch.Tensor, mean: torch.Tensor | None, chunk: int, keep: bool
) -> tuple[float, torch.Tensor | None]:
    """Mean cosine over pairs i != j of the rows of W (- mean); with `keep`, also those unit rows (float32)."""
    n = W.shape[0]
    unit_sum = torch.zeros(W.shape[1], dtype=torch.float64, device=W.device)  # (d,)
    unit_sq = torch.zeros((), dtype=torch.float64, device=W.device)  # 1 per row, 0 for a zero row
    units = torch.empty(W.shape, dtype=torch.float32, device=W.device) if keep else None
    for s in range(0, n, chunk):
        rows = W[s:s + chunk].double()  # (chunk, d)
        rows = rows - mean if mean is not None else rows
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        unit_sum += unit.sum(0)
        unit_sq += unit.pow(2).sum()
        if units is not None:
            units[s:s + chunk] = unit
    return float((unit_sum @ unit_sum - unit_sq) / (n * (n - 1))), units


def _mean_abs_cosine(unit: torch.Tensor, chunk: int, description: str) -> float:
    """Mean |u_i . u_j| over i != j of unit rows (n, d): upper-triangle blocks, float64 total."""
    n = unit.shape[0]
    starts = range(0, n, chunk)
    total = torch.zeros((), dtype=torch.float64, device=unit.device)
    with progress.task(description, total=len(starts) * (len(starts) + 1) // 2) as advance:
        for i in starts:
            for j in starts[i // chunk:]:
                block = unit[i:i + chunk] @ unit[j:j + chunk].T  # (chunk, chunk)
                block_sum = torch.linalg.vector_norm(block, ord=1, dtype=torch.float64)
                if i == j:  # drop the diagonal i == j
                    total += block_sum - torch.linalg.vector_norm(block.diagonal(), ord=1, dtype=torch.float64)
                else:  # the block below the diagonal is its transpose
                    total += 2 * block_sum
                advance()
    return float(total / (n * (n - 1)))


@dataclass
class EmbeddingAutoencoding:
    """Is token t the top logit when its own embedding is unembedded?"""

    top1_raw: float  # argmax(W_E[t] @ W_U) == t
    top1_ln: float  # argmax(ln_final(W_E[t]) @ W_U) == t
    top1_extended: float  # the residual after block 0 (MLP0 included) for the one-token input t
    most_frequent_winners: list[tuple[int, int]]  # (token, how often it wins) for the ln_final view
    n_tokens: int = 0  # how many tokens were scored (the whole vocabulary unless sampled)


@checks.typed
def embedding_autoencoding(model: Model, chunk: int = 1024, top: int = 10, sample: int | None = None,
                           seed: int = 0) -> EmbeddingAutoencoding:
    """Three float32 unembeddings of the vocabulary; block 0 runs alone (the forward stops after it).

    `sample`: score a seeded random sample of that many tokens instead of all of them (each token is
    scored exactly; the rates are then estimates, to about 1/sqrt(sample)). GPT-2's 50257 tokens cost
    three (50257 x 768) @ (768 x 50257) products, about a minute of CPU; 4096 tokens a few seconds.
    """
    top, chunk = checks.count(top, "top"), checks.count(chunk, "chunk")
    vocab = model.config.d_vocab
    ids_all = torch.arange(vocab, device=model.W_E.device)
    if sample is not None and sample < vocab:
        if sample < 1:
            raise UserError(f"sample must be >= 1 token (or None for all {vocab}), got {sample}")
        g = torch.Generator().manual_seed(seed)
        ids_all = torch.randperm(vocab, generator=g)[:sample].sort().values.to(model.W_E.device)
    n = len(ids_all)
    hits = {"raw": 0, "ln": 0, "extended": 0}
    winners: Counter[int] = Counter()
    with progress.task(f"W_E -> W_U top-1 of {n} tokens (raw, ln_final, after block 0)", total=n) as advance:
        for start in range(0, n, chunk):
            ids = ids_all[start:start + chunk]
            emb = model.W_E[ids]  # (chunk, d_model)
            block0 = _block0_output(model, ids[:, None])[:, 0]  # each token alone, (chunk, d_model)
            views = {"raw": emb, "ln": _ln_final(model, emb), "extended": _ln_final(model, block0)}
            for view, x in views.items():
                best = (x @ model.W_U).argmax(-1)  # (chunk,)
                hits[view] += int((best == ids).sum())
                if view == "ln":
                    winners.update(best.tolist())
            advance(len(ids))
    return EmbeddingAutoencoding(hits["raw"] / n, hits["ln"] / n, hits["extended"] / n, winners.most_common(top), n)


def _block0_output(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """blocks.0.resid_post (batch, pos, d_model) from the model's own forward pass, stopped right there
    (the later blocks and the unembedding would be thrown away)."""
    return model(tokens, stop_at_layer=1)


def _ln_final(model: Model, x: torch.Tensor) -> torch.Tensor:
    """The model's own final LayerNorm (its module, so nothing is re-implemented)."""
    from minineo.record.recording import Recorder

    return model.ln_final(x, Recorder(), "ln_final.")
