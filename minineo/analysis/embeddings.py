"""Embedding geometry (norms, the shared offset, pairwise cosines) and embedding autoencoding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from minineo import progress
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


def embedding_geometry(W: torch.Tensor, name: str = "W_E", top: int = 10, chunk: int = 4096) -> EmbeddingGeometry:
    """Geometry of the rows of W (n, d).

    Norms, the mean vector and both mean cosines are exact in float64 and O(n d): the mean pairwise cosine
    is (|sum of unit rows|^2 - sum of |unit row|^2) / (n (n - 1)). The mean |cos| has no closed form: it
    is summed over (chunk, chunk) float32 blocks of the upper triangle into a float64 total, so the
    (n, n) matrix is never held.
    """
    W = W.detach()
    n, d = W.shape
    if n < 2:
        raise ValueError(f"{name} has {n} row(s); pairwise cosines need at least 2")
    norms = torch.cat([W[s:s + chunk].double().norm(dim=-1) for s in range(0, n, chunk)])  # (n,)
    mean = sum(W[s:s + chunk].double().sum(0) for s in range(0, n, chunk)) / n  # (d,)
    mean_cosine, _ = _closed_form_cosine(W, None, chunk, keep=False)
    mean_cosine_centred, centred_unit = _closed_form_cosine(W, mean, chunk, keep=True)
    largest = norms.topk(min(top, n))
    return EmbeddingGeometry(
        name=name, n_vectors=n, mean_norm=float(norms.mean()), std_norm=float(norms.std()),
        mean_vector_norm=float(mean.norm()), mean_cosine=mean_cosine, mean_cosine_centred=mean_cosine_centred,
        mean_abs_cosine_centred=_mean_abs_cosine(centred_unit, chunk, f"mean |cos| of {name} (centred)"),
        largest_norms=list(zip(largest.indices.tolist(), largest.values.tolist())),
    )


def _closed_form_cosine(W: torch.Tensor, mean: torch.Tensor | None, chunk: int, keep: bool) -> tuple[float, torch.Tensor | None]:
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


def embedding_autoencoding(model: Model, chunk: int = 1024, top: int = 10) -> EmbeddingAutoencoding:
    vocab = model.config.d_vocab
    hits = {"raw": 0, "ln": 0, "extended": 0}
    winners: Counter[int] = Counter()
    top1 = RowArgmax(model.W_U.detach())
    with progress.task(f"W_E -> W_U top-1 of {vocab} tokens (raw, ln_final, after block 0)", total=vocab) as advance:
        for start in range(0, vocab, chunk):
            ids = torch.arange(start, min(start + chunk, vocab), device=model.W_E.device)
            emb = model.W_E[ids]  # (chunk, d_model)
            block0 = _block0_output(model, ids[:, None])[:, 0]  # each token alone, (chunk, d_model)
            views = {"raw": emb, "ln": _ln_final(model, emb), "extended": _ln_final(model, block0)}
            for view, x in views.items():
                best = top1(x)
                hits[view] += int((best == ids).sum())
                if view == "ln":
                    winners.update(best.tolist())
            advance(len(ids))
    return EmbeddingAutoencoding(hits["raw"] / vocab, hits["ln"] / vocab, hits["extended"] / vocab,
                                 winners.most_common(top))


class RowArgmax:
    """argmax(x @ W_U, -1) for rows x (batch, d_model), at about bfloat16 matmul speed on CPU.

    bfloat16 logits a_j are within B = 2^-6 |x| max_j |W_U[:, j]| + 2^-7 max_j |a_j| of the exact ones
    (inputs rounded to 8 significant bits, float32 accumulation, bfloat16 output: twice the worst case), so
    only the columns with a_j >= max a - 2B can win; those are re-scored in float32 and the best wins
    (ties: the lowest index, as torch.argmax). A row with more than `max_candidates` such columns is
    computed in full in float32. Elsewhere (CUDA, bfloat16 models) the plain matmul.
    """

    def __init__(self, W_U: torch.Tensor, max_candidates: int = 256):
        self.W_U, self.max_candidates = W_U, max_candidates  # (d_model, d_vocab)
        screen = W_U.device.type == "cpu" and W_U.dtype in (torch.float32, torch.float64)
        self.low = W_U.to(torch.bfloat16) if screen else None
        self.columns = W_U.T.contiguous() if screen and not W_U.T.is_contiguous() else W_U.T  # (d_vocab, d_model)
        self.max_norm = float(W_U.norm(dim=0).max()) if screen else 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(batch,) long: the exact row argmax."""
        x = x.to(self.W_U.dtype)
        if self.low is None:
            return (x @ self.W_U).argmax(-1)
        approx = x.to(torch.bfloat16) @ self.low  # (batch, d_vocab)
        low, high = torch.aminmax(approx, dim=-1)
        low, high = low.to(x.dtype), high.to(x.dtype)
        bound = 2**-6 * x.norm(dim=-1) * self.max_norm + 2**-7 * torch.maximum(low.abs(), high.abs())  # (batch,)
        rows, cols = (approx >= (high - 2 * bound)[:, None]).nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=x.shape[0])
        crowded = (counts > self.max_candidates).nonzero().flatten()
        keep = counts[rows] <= self.max_candidates
        rows, cols = rows[keep], cols[keep]
        exact = torch.cat([(x[r] * self.columns[c]).sum(-1)  # (candidates,), in pieces of ~50 MB
                           for r, c in zip(rows.split(2**14), cols.split(2**14))])
        best = torch.full((x.shape[0],), float("-inf"), dtype=exact.dtype, device=x.device)
        best = best.scatter_reduce(0, rows, exact, "amax")
        winners = exact == best[rows]
        out = torch.full((x.shape[0],), self.W_U.shape[1], dtype=torch.long, device=x.device)
        out = out.scatter_reduce(0, rows[winners], cols[winners], "amin")
        if len(crowded):
            out[crowded] = (x[crowded] @ self.W_U).argmax(-1)
        return out


class _Stop(Exception):
    def __init__(self, value: torch.Tensor):
        self.value = value


def _block0_output(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    """blocks.0.resid_post (batch, pos, d_model) from the model's own forward pass, stopped right there
    (the later blocks and the unembedding would be thrown away)."""

    def stop(value: torch.Tensor) -> torch.Tensor:
        raise _Stop(value)

    try:
        model(tokens, patch={"blocks.0.resid_post": stop})
    except _Stop as done:
        return done.value
    raise RuntimeError("the forward pass never reached blocks.0.resid_post")


def _ln_final(model: Model, x: torch.Tensor) -> torch.Tensor:
    """The model's own final LayerNorm (its module, so nothing is re-implemented)."""
    from minineo.recording import Recorder

    return model.ln_final(x, Recorder(), "ln_final.")
