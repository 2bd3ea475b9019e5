"""Token-id input checks: clear errors before anything reaches an embedding lookup.

The checks themselves live in minineo.checks (token_batch, attention_mask, position_ids), the one validation layer;
these names keep the forward pass's call sites and their device placement."""

from __future__ import annotations

from typing import Sequence, Union

import torch

from minineo import checks

TokenInput = Union[torch.Tensor, Sequence[int], Sequence[Sequence[int]], str, Sequence[str]]


def as_token_batch(tokens: TokenInput, d_vocab: int, device: torch.device, name: str = "tokens") -> torch.Tensor:
    """A validated LongTensor (batch, pos) on `device` (minineo.checks.token_batch)."""
    return checks.token_batch(tokens, d_vocab, name).to(device=device)


def validate_mask(mask: torch.Tensor, token_shape: torch.Size, device: torch.device, past: int = 0) -> torch.Tensor:
    """The attention mask as a 0/1 LongTensor (batch, past + pos) (minineo.checks.attention_mask)."""
    return checks.attention_mask(mask, token_shape, device, past)


def validate_positions(position_ids, token_shape: torch.Size, n_ctx: int, device: torch.device) -> torch.Tensor:
    """Position ids as a LongTensor (batch or 1, pos), each in 0..n_ctx-1 (minineo.checks.position_ids)."""
    return checks.position_ids(position_ids, token_shape, n_ctx, device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, as HF's generate does: cumsum(mask) - 1, pads at 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
