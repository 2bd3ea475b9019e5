"""Attention masks (causal, GPT-Neo's local window, padding) and the attention math, explicit and fused.

Both bodies take the same arguments; the explicit one is the spec and records `scores` and
`pattern`, the fused one calls scaled_dot_product_attention. A test proves them equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minineo.record.recording import Recorder


def allowed_keys(
    q_index: torch.Tensor, k_index: torch.Tensor, window: int | None, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """Boolean (batch or 1, 1, q_pos, k_pos): may query i look at key j?

    Causal (j <= i); GPT-Neo local layers also need i - window < j. Padding keys (key_mask == 0)
    are hidden, but a query always sees itself so no row is fully masked (pad rows stay finite).
    """
    distance = q_index[:, None] - k_index[None, :]  # (q_pos, k_pos)
    allowed = distance >= 0
    if window is not None:
        allowed = allowed & (distance < window)
    allowed = allowed[None, None]  # (1, 1, q_pos, k_pos)
    if key_mask is not None:
        allowed = allowed & (key_mask.bool()[:, None, None, :] | (distance == 0))
    return allowed


def window_masks(
    q_len: int, k_len: int, windows: list[int | None], key_mask: torch.Tensor | None, device: torch.device,
) -> dict[int | None, torch.Tensor | None]:
    """One boolean mask per distinct window for the last `q_len` of `k_len` positions; None where plain causal
    attention is exact (no padding, and every query sees all the keys the window allows)."""
    masks: dict[int | None, torch.Tensor | None] = {}
    k_index = torch.arange(k_len, device=device)
    for window in set(windows):
        plain = key_mask is None and (q_len == k_len or q_len == 1) and (window is None or k_len <= window)
        masks[window] = None if plain else allowed_keys(k_index[k_len - q_len:], k_index, window, key_mask)
    return masks


def attention_scores(
    q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None, scale: float, upcast: bool
) -> torch.Tensor:
    """Masked, pre-softmax q.k * scale: (batch, head, q_pos, k_pos); q, k: (batch, pos, head, d_head)."""
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (batch, head, pos, d_head)
    if upcast:  # HF computes these scores in float32 (GPT-Neo always; GPT-2 with reorder_and_upcast_attn)
        q, k = at_least_float32(q), at_least_float32(k)
    scores = torch.matmul(q, k.transpose(-1, -2))  # (batch, head, q_pos, k_pos)
    # In place: the (q_pos, k_pos) tensors dominate this path's memory traffic; same values as HF's `* scaling`.
    if scale != 1.0:
        scores.mul_(scale)
    if allowed is None:
        k_index = torch.arange(k.shape[-2], device=q.device)
        allowed = allowed_keys(k_index[k.shape[-2] - q.shape[-2]:], k_index, None, None)
    return scores.masked_fill_(~allowed, float("-inf"))


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged (an upcast never lowers precision)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def attention_pattern(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax over keys, in the scores' precision, then in the values' dtype: (batch, head, q_pos, k_pos)."""
    return F.softmax(scores, dim=-1).to(dtype)


def attend_explicit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, scale: float,
    upcast: bool, rec: Recorder, prefix: str,
) -> torch.Tensor:
    """softmax(q.k * scale, masked) @ v, recording `{prefix}scores` and `{prefix}pattern`.

    q: (batch, q_pos, head, d_head); k, v: (batch, k_pos, head, d_head). Returns z (batch, q_pos, head, d_head).
    """
    scores = rec(prefix + "scores", attention_scores(q, k, allowed, scale, upcast))
    pattern = rec(prefix + "pattern", attention_pattern(scores, v.dtype))
    return torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2)  # (batch, q_pos, head, d_head)


def attend_fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, scale: float, upcast: bool,
) -> torch.Tensor:
    """The same attention through scaled_dot_product_attention.

    `allowed=None` means plain causal with as many queries as keys (or a single query that sees every key).
    """
    dtype = v.dtype
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if upcast and dtype == torch.float16:
        # GPT-Neo's unscaled q.k overflows float16's range; HF upcasts, so do the whole attention in float32.
        q, k, v = q.float(), k.float(), v.float()
    if allowed is None:  # plain causal; callers pass a mask when queries follow a key/value cache
        # An `if`, not a comparison result: torch.compile then guards on it and passes a plain bool.
        causal = True if q.shape[-2] > 1 else False  # noqa: SIM210
        z = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    else:
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
    return z.transpose(1, 2).to(dtype)  # (batch, q_pos, head, d_head)
