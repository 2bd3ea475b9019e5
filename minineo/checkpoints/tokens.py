"""Token-id input checks: clear errors before anything reaches an embedding lookup."""

from __future__ import annotations

from typing import Sequence, Union

import torch

from minineo.checks import describe
from minineo.errors import UserError, WrongTypeError

TokenInput = Union[torch.Tensor, Sequence[int], Sequence[Sequence[int]], str, Sequence[str]]


def as_token_batch(tokens: TokenInput, d_vocab: int, device: torch.device, name: str = "tokens") -> torch.Tensor:
    """A validated LongTensor (batch, pos) on `device`; `name` is the argument as the caller's user wrote it."""
    if not isinstance(tokens, torch.Tensor):
        if isinstance(tokens, (list, tuple)) and (not tokens or all(isinstance(r, (list, tuple)) and not r for r in tokens)):
            raise UserError(f"{name} are empty ({tokens!r}); give at least one token id or a non-empty text")
        if isinstance(tokens, bool) or not isinstance(tokens, (list, tuple, int)) and type(tokens).__module__ != "numpy":
            raise WrongTypeError(f"{name} must be token ids (a LongTensor of shape (batch, pos) or (pos,), a list of "
                                 f"ids) or a text, got {describe(tokens)}")
        try:
            tokens = torch.as_tensor(tokens)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise UserError(f"{name} must be integer ids (a LongTensor of shape (batch, pos) or (pos,)): {err}") from err
    if tokens.numel() == 0:
        raise UserError(f"{name} are empty (shape {tuple(tokens.shape)}); give at least one token")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise UserError(
            f"{name} must be integer ids, got a {tokens.dtype} tensor; convert with {name}.long() "
            "(to feed embeddings instead, patch the 'embed' site)"
        )
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise UserError(f"{name} must have shape (batch, pos) or (pos,), got {tuple(tokens.shape)}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        batch, pos = (tokens == bad).nonzero()[0].tolist()
        raise UserError(
            f"{name}: token id {bad} at batch {batch}, position {pos} is outside the vocabulary (0..{d_vocab - 1})"
        )
    return tokens.to(device=device, dtype=torch.long)


def validate_mask(mask: torch.Tensor, token_shape: torch.Size, device: torch.device, past: int = 0) -> torch.Tensor:
    """The attention mask as a 0/1 LongTensor (batch, past + pos).

    A row with no 1 (no real token) is refused: nothing in it can be attended to, so its outputs would be an
    average over padding (HF returns such numbers silently), not a model's prediction for anything.
    """
    mask = torch.as_tensor(mask, device=device)
    expected = (token_shape[0], past + token_shape[1])
    if mask.ndim == 1 and token_shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != expected:
        raise UserError(f"attention_mask has shape {tuple(mask.shape)} but the tokens need {expected}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise UserError("attention_mask must hold only 0 (padding) and 1 (real token)")
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist() if mask.numel() else []
    if empty and mask.shape[-1]:
        rows = ", ".join(map(str, empty[:8])) + (", ..." if len(empty) > 8 else "")
        raise UserError(f"attention_mask row{'s' if len(empty) > 1 else ''} {rows} (of {mask.shape[0]}) "
                        f"{'have' if len(empty) > 1 else 'has'} no 1: no real token to attend to, so its outputs "
                        "would mean nothing; drop the row, or mark its real tokens with 1")
    return mask.long()


def validate_positions(position_ids, token_shape: torch.Size, n_ctx: int, device: torch.device) -> torch.Tensor:
    """Position ids as a LongTensor (batch or 1, pos), each in 0..n_ctx-1."""
    try:
        positions = torch.as_tensor(position_ids, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"position_ids must be integers of shape (batch, pos) or (pos,): {err}") from err
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise UserError(f"position_ids must be integer positions, got a {positions.dtype} tensor; convert with .long()")
    if positions.ndim == 1:
        positions = positions[None]
    batch, pos = token_shape
    if positions.ndim != 2 or positions.shape[1] != pos or positions.shape[0] not in (1, batch):
        raise UserError(
            f"position_ids has shape {tuple(positions.shape)} but the tokens have shape {tuple(token_shape)}; "
            f"give ({batch}, {pos}), (1, {pos}) or ({pos},)"
        )
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= n_ctx):
        bad = int(positions.min()) if int(positions.min()) < 0 else int(positions.max())
        raise UserError(f"position id {bad} is outside the model's positions 0..{n_ctx - 1} (n_ctx={n_ctx})")
    return positions.long()


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, as HF's generate does: cumsum(mask) - 1, pads at 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
