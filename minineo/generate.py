"""Sampling with a key/value cache on the fast path, apart from the analysis path. Left-padding aware."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minineo.errors import UserError
from minineo.recording import Recorder
from minineo.tokens import TokenInput

if TYPE_CHECKING:
    from minineo.model import Model


class KVCache:
    """Each layer's keys and values so far: (batch, pos_so_far, head, d_head)."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], dim=1), torch.cat([self.values[layer], v], dim=1)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, n: int) -> None:
        self.length += n


@torch.inference_mode()
def generate(
    model: Model, tokens: TokenInput, max_new_tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
    do_sample: bool = False, attention_mask: torch.Tensor | None = None, eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prompt plus up to `max_new_tokens` tokens: LongTensor (batch, pos + new).

    Greedy unless `do_sample`. Left-padded batches need `attention_mask` (text input is padded and
    masked automatically). Rows that produced `eos_token_id` continue with padding.
    """
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise UserError("temperature must be > 0 when sampling; use do_sample=False for greedy decoding")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k must be a whole number >= 1 (keep the k likeliest tokens) or None (all), got {top_k!r}")
    kv = KVCache(model.config.n_layers)
    tokens, attention_mask, position_ids = model._prepare(tokens, attention_mask, None, kv)
    if tokens.shape[1] + max_new_tokens > model.config.n_ctx:
        raise UserError(f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={model.config.n_ctx}")
    mask = attention_mask if attention_mask is not None else torch.ones_like(tokens)
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    pad = model.tokenizer.pad_token_id if model.tokenizer is not None and model.tokenizer.pad_token_id is not None else 0
    step_input, out = tokens, tokens
    for _ in range(max_new_tokens):
        logits = model._core(step_input, position_ids, mask, Recorder(), False, kv)[:, -1].float()  # (batch, d_vocab)
        next_token = _choose(logits, do_sample, temperature, top_k, generator)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
            finished |= next_token == eos_token_id
        out = torch.cat([out, next_token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position_ids = (mask.sum(-1, keepdim=True) - 1)  # (batch, 1): the next real position
        step_input = next_token[:, None]
        if eos_token_id is not None and bool(finished.all()):
            break
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
