"""Sampling with a key/value cache on the fast path, apart from the analysis path. Left-padding aware.

It uses only the model's public decoding entry (`Model.kv_cache`, `Model.decode`): the prompt is one
decode call, every new token one more, each writing into a key/value cache preallocated for the
prompt plus `max_new_tokens`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minineo.errors import UserError
from minineo.forward.kv_cache import KVCache
from minineo.checkpoints.tokens import TokenInput, positions_from_mask

if TYPE_CHECKING:
    from minineo.forward.model import Model

__all__ = ["KVCache", "generate"]


@torch.inference_mode()
def generate(
    model: Model, tokens: TokenInput, max_new_tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
    do_sample: bool = False, attention_mask: torch.Tensor | None = None, eos_token_id: int | None = None,
    generator: torch.Generator | None = None, static: bool | None = None,
) -> torch.Tensor:
    """Prompt plus up to `max_new_tokens` tokens: LongTensor (batch, pos + new).

    Greedy unless `do_sample`. Left-padded batches need `attention_mask` (text input is padded and
    masked automatically). Rows that produced `eos_token_id` continue with padding. `static` decodes
    with the same shapes at every step (the default when the model was compiled; see `KVCache`).
    """
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise UserError("temperature must be > 0 when sampling; use do_sample=False for greedy decoding")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k must be a whole number >= 1 (keep the k likeliest tokens) or None (all), got {top_k!r}")
    tokens, attention_mask = model.token_batch(tokens, attention_mask)
    batch, prompt = tokens.shape
    if prompt + max_new_tokens > model.config.n_ctx:
        raise UserError(f"prompt ({prompt}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={model.config.n_ctx}")
    out = torch.empty(batch, prompt + max_new_tokens, dtype=torch.long, device=tokens.device)  # (batch, pos + new)
    out[:, :prompt] = tokens
    if max_new_tokens == 0:
        return out
    kv = model.kv_cache(batch, prompt + max_new_tokens, static=static)
    if attention_mask is None:
        position_ids = torch.arange(prompt, device=tokens.device).expand(batch, prompt)
    else:
        position_ids = positions_from_mask(attention_mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    pad = model.tokenizer.pad_token_id if model.tokenizer is not None and model.tokenizer.pad_token_id is not None else 0
    logits = model.decode(tokens, kv, position_ids, attention_mask)  # (batch, d_vocab)
    position_ids = position_ids[:, -1:]  # (batch, 1)
    for step in range(max_new_tokens):
        next_token = _choose(logits.float(), do_sample, temperature, top_k, generator)  # (batch,)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
            finished |= next_token == eos_token_id
        out[:, prompt + step] = next_token
        if step + 1 == max_new_tokens or eos_token_id is not None and bool(finished.all()):
            return out[:, :prompt + step + 1]
        position_ids = position_ids + 1  # every new token is real: the next position of its row
        logits = model.decode(next_token[:, None], kv, position_ids)
    return out


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
