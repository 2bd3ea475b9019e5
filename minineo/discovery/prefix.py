"""The prompts' shared prefix, computed once: the positions before the first one at which a clean and a corrupted
prompt differ, in any pair of the batch.

By causality every activation at those positions is the same in the clean run, the corrupted run and any run that
mixes them (an edge-patched run, an interpolation of the inputs or of a node's outputs): a sender's (corrupted - clean)
output is exactly 0 there, and a receiver's input there never changes the metric at a later position except through
the keys and values it makes, which are the same in every run. So every run of a batch can start at the first moved
position from one key/value cache of the prefix (`SharedPrefix.run`), recomputing only the positions that can change
(what `gradients` and `exact` do; on IOI prompts the names' first difference is half-way through the prompt).

Only for metrics that read the last position alone (logit_diff; others are probed): the prefix's logits are not
computed. Everything a run records (its patches' values) then starts at `length`: a tensor (batch, pos - length, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from minineo.checkpoints.tokens import positions_from_mask
from minineo.discovery.pairs import Pairs
from minineo.forward.kv_cache import KVCache

if TYPE_CHECKING:
    from minineo.forward.model import Model

EMBED_SITES = ("embed", "pos_embed")  # patched where the residual is made, before block 0


def shared_length(batch: Pairs) -> int:
    """The number of leading positions at which clean and corrupted tokens agree in every pair, at most pos - 1 (the
    last position always runs). Left padding is part of the prefix (its mask is the same in both prompts)."""
    differs = (batch.clean != batch.corrupted).any(0)  # (pos,)
    pos = batch.clean.shape[1]
    return min(int(differs.int().argmax()) if bool(differs.any()) else pos, pos - 1)


@dataclass
class SharedPrefix:
    """A batch's shared prefix: `length` positions, their keys and values at every layer (`kv`, from the clean prompts;
    None when length is 0), the batch's position ids (batch or 1, pos) and attention mask (batch, pos) or None."""

    length: int
    kv: KVCache | None
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None

    @classmethod
    @torch.no_grad()
    def of(cls, model: Model, batch: Pairs, enabled: bool = True) -> SharedPrefix:
        """The prefix of `batch` (on the model's device), run once on the clean prompts; enabled=False: length 0 (every
        run from position 0: a metric that reads more than the last position)."""
        mask, (n, pos) = batch.attention_mask, batch.clean.shape
        positions = positions_from_mask(mask) if mask is not None else torch.arange(pos, device=batch.clean.device)[None]
        length = shared_length(batch) if enabled else 0
        prefix = cls(length, None, positions, mask)
        if length:
            prefix.kv = KVCache(model.config, n, pos, device=model.W_E.device, dtype=model.W_E.dtype)
            resid = prefix.embed(model, batch.clean, {}, slice(0, length))  # (batch, length, d_model)
            early = None
            if mask is not None:  # a row all padding so far: its prefix is never attended to, any mask will do
                early = mask[:, :length].clone()
                early[early.sum(-1) == 0] = 1
            model.run_from(0, resid, kv=prefix.kv, attention_mask=early, stop_at_layer=model.config.n_layers)
        return prefix

    def cache(self, layers: range | None = None) -> KVCache | None:
        """This run's own copy of the prefix's keys and values (of `layers`, default all), which the run extends; None
        without a prefix."""
        return self.kv.repeated(layers=layers) if self.kv is not None else None

    def last_position(self, rows: int) -> torch.Tensor:
        """The (rows, pos - length) bool mask selecting the last position, for `run_from(logits_at=...)`."""
        at = torch.zeros(rows, len(self.position_ids[0]) - self.length, dtype=torch.bool, device=self.position_ids.device)
        at[:, -1] = True
        return at

    def embed(self, model: Model, tokens: torch.Tensor, patch: dict, at: slice | None = None) -> torch.Tensor:
        """blocks.0.resid_pre (batch, positions `at`, default length.., d_model) of `tokens` (batch, pos), with the
        patches of the embedding sites applied there (their values of those positions)."""
        at = at or slice(self.length, None)
        first = {k: v for k, v in patch.items() if k in EMBED_SITES}
        positions = self.position_ids[:, at]
        return model(tokens[:, at], position_ids=positions, patch=first, stop_at_layer=0)

    def run(self, model: Model, tokens: torch.Tensor, patch: dict[str, Callable | torch.Tensor],
            stop_at_layer: int | None = None) -> torch.Tensor:
        """One run of `tokens` (batch, pos) from position `length` with `patch` (values of positions length..): the last
        position's logits (batch, 1, d_vocab), or with stop_at_layer that layer's residual (batch, pos - length,
        d_model). Without a prefix (length 0) this is the plain forward, split at blocks.0.resid_pre."""
        resid = self.embed(model, tokens, patch)
        rest = {k: v for k, v in patch.items() if k not in EMBED_SITES}
        kv = self.cache()  # this run's own copy: it writes its positions
        if stop_at_layer is not None:
            return model.run_from(0, resid, patch=rest, kv=kv, attention_mask=self.attention_mask,
                                  stop_at_layer=stop_at_layer)
        at = self.last_position(len(resid))
        return model.run_from(0, resid, patch=rest, kv=kv, attention_mask=self.attention_mask, logits_at=at)[:, None]
