"""The key/value cache that attention fills while decoding: preallocated, written in place.

Buffers are sized once, (batch, max_len, head, d_head) per layer, so a decode step copies only its
own keys and values (no torch.cat of everything so far). Two modes:

- dynamic (default): attention reads the filled prefix `[:, :length]`, a view; the shapes grow by
  one each step, the Python work does not.
- static (`static=True`): attention reads the whole buffer and a mask hides the slots not written
  yet; the slot is a tensor, so every decode step has the same shapes and no host-side value --
  what torch.compile needs to capture the step as one CUDA graph.
"""

from __future__ import annotations

import copy

import torch

from minineo.forward.attention import allowed_keys, window_masks
from minineo.config import Config
from minineo.errors import UserError


class KVCache:
    """Each layer's keys and values, (batch, max_len, head, d_head), and which slots are real tokens."""

    def __init__(self, config: Config, batch: int, max_len: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, static: bool = False, layers: range | None = None):
        """`layers`: the only layers that will run with this cache (default all); the others get no buffers."""
        if max_len > config.n_ctx:
            raise UserError(f"max_len={max_len}: a key/value cache of {max_len} positions is longer than the model's "
                            f"context n_ctx={config.n_ctx}; give max_len <= {config.n_ctx}")
        shape = (batch, max_len, config.n_heads, config.d_head)
        used = range(config.n_layers) if layers is None else layers
        # static: zeros, not empty, as unwritten slots are read (masked), and 0 * garbage could be NaN; a dynamic
        # cache reads only the slots written
        alloc = torch.zeros if static else torch.empty
        self.keys = [alloc(shape, device=device, dtype=dtype) if l in used else None for l in range(config.n_layers)]
        self.values = [alloc(shape, device=device, dtype=dtype) if l in used else None for l in range(config.n_layers)]
        self.key_mask = torch.ones(batch, max_len, device=device, dtype=torch.long)  # 0 where a slot is padding
        self.windows, self.max_len, self.static = config.windows, max_len, static
        self.length, self.padded = 0, False  # slots filled so far (host-side count); any padding among them
        self.slot = torch.zeros(1, device=device, dtype=torch.long)  # the same count as a tensor (static mode)
        if static and hasattr(torch, "_dynamo"):  # buffers updated in place inside a captured CUDA graph
            for t in (*self.keys, *self.values):
                if t is not None:
                    torch._dynamo.mark_static_address(t)

    def masks(self, n_new: int, attention_mask: torch.Tensor | None) -> dict[int | None, torch.Tensor | None]:
        """One boolean mask (batch or 1, 1, n_new, keys) per window for the next `n_new` tokens.

        `attention_mask` (batch, n_new) marks which of them are padding (0). None means plain causal.
        """
        if self.length + n_new > self.max_len:
            raise UserError(f"the key/value cache holds max_len={self.max_len} positions; {self.length} are used and "
                            f"the {n_new} new tokens do not fit: make it larger (model.kv_cache(batch, "
                            f"max_len={self.length + n_new}))")
        if attention_mask is not None:
            self.key_mask[:, self.length:self.length + n_new] = attention_mask
            self.padded = self.padded or bool((attention_mask == 0).any())
        if self.static:  # always masked, over the whole buffer: the same shapes at every step
            k_index = torch.arange(self.max_len, device=self.slot.device)
            q_index = self.slot + torch.arange(n_new, device=self.slot.device)
            return {w: allowed_keys(q_index, k_index, w, self.key_mask) for w in set(self.windows)}
        k_len = self.length + n_new
        key_mask = self.key_mask[:, :k_len] if self.padded else None
        return window_masks(n_new, k_len, self.windows, key_mask, self.key_mask.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v (batch, n_new, head, d_head) into their slots; the keys and values to attend to."""
        if self.static:
            index = self.slot + torch.arange(k.shape[1], device=k.device)
            self.keys[layer].index_copy_(1, index, k)
            self.values[layer].index_copy_(1, index, v)
            return self.keys[layer], self.values[layer]
        end = self.length + k.shape[1]
        self.keys[layer][:, self.length:end] = k
        self.values[layer][:, self.length:end] = v
        return self.keys[layer][:, :end], self.values[layer][:, :end]  # (batch, end, head, d_head), views

    def holds(self, layer: int) -> bool:
        """Whether this cache keeps the keys and values of `layer` (a cache made for some layers keeps no others)."""
        return self.keys[layer] is not None

    def advance(self, n: int) -> None:
        """Mark `n` more slots as filled (after every layer has written them)."""
        self.length += n
        self.slot += n

    def repeated(self, times: int = 1, layers: range | None = None) -> KVCache:
        """A new cache holding this one's slots, filled so far, with every row repeated `times` times (row i of copy j
        at j * batch + i, as Tensor.repeat), of `layers` only (default: every layer this one holds): a run continued
        from it writes its own buffers, not this cache's."""
        if self.static:
            raise UserError("a static key/value cache is captured in place and cannot be repeated; repeat a dynamic "
                            "one (model.kv_cache(batch, max_len, static=False))")
        out = copy.copy(self)
        kept = range(len(self.keys)) if layers is None else layers
        out.keys = [None if t is None or l not in kept else t.repeat(times, 1, 1, 1) for l, t in enumerate(self.keys)]
        out.values = [None if t is None or l not in kept else t.repeat(times, 1, 1, 1) for l, t in enumerate(self.values)]
        out.key_mask, out.slot = self.key_mask.repeat(times, 1), self.slot.clone()
        return out
