"""Token-id input checks: clear errors before anything reaches an embedding lookup."""

from __future__ import annotations

from typing import Sequence, Union

import torch

TokenInput = Union[torch.Tensor, Sequence[int], Sequence[Sequence[int]], str, Sequence[str]]


def as_token_batch(tokens: TokenInput, d_vocab: int, device: torch.device) -> torch.Tensor:
    """A validated LongTensor (batch, pos) on `device`."""
    if not isinstance(tokens, torch.Tensor):
        try:
            tokens = torch.as_tensor(tokens)
        except (TypeError, ValueError) as err:
            raise ValueError(f"tokens must be integer ids (a LongTensor of shape (batch, pos) or (pos,)): {err}") from err
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(
            f"tokens must be integer ids, got a {tokens.dtype} tensor; convert with tokens.long() "
            "(to feed embeddings instead, patch the 'embed' site)"
        )
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (batch, pos) or (pos,), got {tuple(tokens.shape)}")
    if tokens.numel() == 0:
        raise ValueError(f"tokens are empty (shape {tuple(tokens.shape)}); give at least one token")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        batch, pos = (tokens == bad).nonzero()[0].tolist()
        raise ValueError(
            f"token id {bad} at batch {batch}, position {pos} is outside the vocabulary (0..{d_vocab - 1})"
        )
    return tokens.to(device=device, dtype=torch.long)


def validate_mask(mask: torch.Tensor, token_shape: torch.Size, device: torch.device, past: int = 0) -> torch.Tensor:
    """The attention mask as a 0/1 LongTensor (batch, past + pos)."""
    mask = torch.as_tensor(mask, device=device)
    expected = (token_shape[0], past + token_shape[1])
    if mask.ndim == 1 and token_shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != expected:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but the tokens need {expected}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    return mask.long()


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, as HF's generate does: cumsum(mask) - 1, pads at 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
