"""Head detectors: induction, previous-token and duplicate-token scores from attention patterns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minineo import checks, progress
from minineo.forward.model import Model


@dataclass
class HeadScores:
    """Each score is (layer, head): the mean attention a head pays to the position the pattern predicts, over the
    queries that have such a position; NaN when none has (tokens with no repeated token: induction and
    duplicate-token; a single token: previous-token too)."""

    induction: torch.Tensor  # to the token after an earlier occurrence of the current token
    previous_token: torch.Tensor  # to the position just before
    duplicate_token: torch.Tensor  # to earlier occurrences of the current token
    induction_loss: float | None = None  # mean next-token loss on the second repeat (repeated sequences only)
    first_half_loss: float | None = None  # the same on the first (unpredictable) half


@checks.typed
def repeated_tokens(model: Model, seq_len: int = 50, n_seqs: int = 8, seed: int = 0, prepend_bos: bool = True,
                    low: int | None = None, high: int | None = None) -> torch.Tensor:
    """(n_seqs, [BOS] + 2 * seq_len): random token ids in [low, high) (default: the whole vocabulary),
    each sequence repeated twice."""
    vocab = model.config.d_vocab
    seq_len, n_seqs = checks.count(seq_len, "seq_len"), checks.count(n_seqs, "n_seqs")
    low = 0 if low is None else checks.integer(low, "low", low=0, high=vocab - 1, fix="a token id")
    high = vocab if high is None else checks.integer(high, "high", low=low + 1, high=vocab,
                                                     fix="token ids are drawn from low..high-1")
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(low, high, (n_seqs, seq_len), generator=g)
    tokens = torch.cat([half, half], dim=1)
    if prepend_bos:
        bos = model.config.bos_token_id if model.config.bos_token_id is not None else 0
        tokens = torch.cat([torch.full((n_seqs, 1), bos), tokens], dim=1)
    return tokens.to(model.W_E.device)


@checks.typed
def head_scores(model: Model, tokens: torch.Tensor, repeated_len: int | None = None) -> HeadScores:
    """Scores on any tokens (duplicates are found in the tokens themselves). With `repeated_len`
    (tokens from `repeated_tokens`), also the loss on each half."""
    tokens, _ = model.token_batch(tokens)  # (batch, pos)
    if repeated_len is not None:
        checks.integer(repeated_len, "repeated_len", low=1, high=tokens.shape[1] // 2,
                       fix="the length of one half of repeated_tokens' sequences (its seq_len)")
    with progress.task(f"head scores: attention patterns of {tuple(tokens.shape)} tokens"):
        logits, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("attn.pattern"))
    patterns = cache.stack("pattern")  # (layer, batch, head, q_pos, k_pos)
    pos = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]  # (batch, q_pos, k_pos)
    earlier = torch.ones(pos, pos, dtype=torch.bool, device=tokens.device).tril(-1)
    duplicate = same & earlier  # k < q holds the same token as q
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # the key right after an earlier occurrence
    previous = torch.zeros_like(duplicate)
    previous[:, 1:] = torch.eye(pos, dtype=torch.bool, device=tokens.device)[:-1][None].expand(tokens.shape[0], -1, -1)
    scores = [_mean_mass(patterns, target) for target in (induction, previous, duplicate)]
    result = HeadScores(*scores)
    if repeated_len is not None:
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), tokens[:, 1:], reduction="none")  # (batch, pos-1)
        result.induction_loss = float(losses[:, -repeated_len + 1:].mean())
        result.first_half_loss = float(losses[:, -2 * repeated_len + 1:-repeated_len].mean())
    return result


def _mean_mass(patterns: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over (batch, query) of the attention on the target keys, for queries that have any: (layer, head).

    NaN when no query has a target key (e.g. no repeated token: no induction or duplicate-token query), never a
    measured-looking 0."""
    mass = (patterns * target[None, :, None].to(patterns.dtype)).sum(-1)  # (layer, batch, head, q_pos)
    has = target.any(-1)[None, :, None].to(patterns.dtype)  # (1, batch, 1, q_pos)
    count = has.sum((1, 3))
    return torch.where(count > 0, (mass * has).sum((1, 3)) / count.clamp(min=1), float("nan"))
