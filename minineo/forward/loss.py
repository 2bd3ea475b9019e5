"""Next-token cross-entropy of logits against their own tokens, pad positions excluded.

    next_token_nats(logits, tokens, attention_mask=None) -> (nats (batch, pos - 1), counted (batch, pos - 1) bool)
    next_token_loss(logits, tokens, attention_mask=None, per_token=False) -> scalar or (batch, pos - 1)

Position j's logits predict token j + 1 (HF's `labels=input_ids` loss shifts the same way). A prediction
is counted when both the token it reads at j and the token it predicts at j + 1 are real (mask 1): with
left padding the first real token has only pads before it, so it is not predicted, exactly as in the
unpadded row, whose first token is not predicted either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_nats(
    logits: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log p(token j+1 | ..j) in nats (batch, pos - 1), float32, 0 where not counted; counted (batch, pos - 1) bool).

    logits (batch, pos, d_vocab), tokens (batch, pos); the log-softmax runs in float32 whatever the model's dtype.
    """
    batch, pos, d_vocab = logits.shape
    nats = F.cross_entropy(logits[:, :-1].reshape(-1, d_vocab).float(), tokens[:, 1:].reshape(-1),
                           reduction="none").view(batch, pos - 1)  # (batch, pos - 1)
    if attention_mask is None:
        return nats, torch.ones_like(nats, dtype=torch.bool)
    real = attention_mask.bool()
    counted = real[:, 1:] & real[:, :-1]  # (batch, pos - 1)
    return nats.masked_fill(~counted, 0.0), counted


def next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, per_token: bool = False
) -> torch.Tensor:
    """Mean nats over the counted predictions (a scalar), or per prediction (batch, pos - 1) with 0 at pads."""
    nats, counted = next_token_nats(logits, tokens, attention_mask)
    if per_token:
        return nats
    return nats.sum() / counted.sum().clamp(min=1)
