"""Exact edge scores: every edge patched alone, m(only s -> r carrying its corrupted output) - m(clean), per pair.

The recipe of the exact edge-patched forward (minineo.discovery.patched) for one edge at a time, made cheap: a variant
starts at its receiver's layer from the clean run's recorded residual (`Model.run_from`) with the receiver's input moved
by the sender's (corrupted - clean) output; variants are batched up to VARIANT_FLOATS residual floats per forward; a
sender whose two outputs are equal scores exactly 0 without a forward; edges into an MLP or the logits skip their
layer's attention (attn_out fixed to the clean run's); a head's moved q, k or v enters with the other two fixed, so the
receiver's layer runs no projection. When the metric reads only the last position (logit_diff), only the positions
from the prompts' first difference on are computed (minineo.discovery.prefix: the shared prefix's keys and values are
the clean run's), and the last block runs its queries, attention output and MLP at the last position alone
(`_Variants`): the keys and values of the earlier positions come from the clean run when only a query moves, else from
a pass with attention and the MLP skipped (z and mlp_out fixed); the last layer's MLP and logits receivers run one
position. Measured at GPT-2-small shape (16 pairs x
16 tokens) and on the zoo (64 IOI pairs): benchmarks/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from minineo.discovery.engine import reads_last_position, run_metric
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs
from minineo.discovery.patched import SenderTaps, record_corrupted
from minineo.discovery.prefix import shared_length
from minineo.forward.kv_cache import KVCache

if TYPE_CHECKING:
    from minineo.forward.model import Model

VARIANT_FLOATS = 4096 * 768  # residual floats per batched forward of exact's variants (4096 tokens at d_model 768)


# ---- exact -------------------------------------------------------------------------------------------------

def _repeat(batch: Pairs, v: int) -> Pairs:
    mask = None if batch.attention_mask is None else batch.attention_mask.repeat(v, 1)
    return Pairs(batch.clean.repeat(v, 1), batch.corrupted.repeat(v, 1), mask, batch.answer.repeat(v),
                 batch.wrong.repeat(v))


def exact_groups(graph: Graph) -> list[tuple[int, str, list[int]]]:
    """What `exact` runs, in order: (layer, site, receiver indices) with site "qkv_input" (every head's q, k and v
    input of the layer, their variants batched together), "mlp_in", or "resid_post" (the logits)."""
    groups: list[tuple[int, str, list[int]]] = []
    for layer in range(graph.n_layers):
        groups.append((layer, "qkv_input", [graph.receiver_index(layer, h, x) for x in "qkv" for h in range(graph.n_heads)]))
        groups.append((layer, "mlp_in", [graph.receiver_index(layer)]))
    groups.append((graph.n_layers - 1, "resid_post", [graph.logits_index]))
    return groups


class _Variants:
    """One batch's variants of one group of receivers (exact_groups): each moves one receiver's input by one sender's
    (corrupted - clean) output and runs from the receiver's layer.

    A head's moved q, k or v input enters as its projection: one pass per sender (attention and the MLP skipped: z and
    mlp_out fixed) gives q, k and v of the moved input for every head at once, and each variant patches its head's slice
    of `attn.q` / `attn.k` / `attn.v` (the plain path: no per-head copies of the residual). With a metric of the last
    position only, the last block runs its queries, attention output and MLP at that position alone: keys and values
    of the earlier positions come from a pass with attention and the MLP skipped, or, for the last layer's own q/k/v
    receivers, from the clean run with the moved head's replaced; its MLP and logits receivers need no attention."""

    def __init__(self, model: Model, graph: Graph, batch: Pairs, cache: dict[str, torch.Tensor], delta: torch.Tensor,
                 last_only: bool, layer: int, site: str, first: int, prefix: KVCache):
        self.model, self.graph, self.batch, self.cache, self.delta = model, graph, batch, cache, delta
        self.last_only, self.tail = last_only, last_only and batch.clean.shape[1] > 1
        self.layer, self.site, self.first = layer, site, first
        # the shared prefix's keys and values (the clean run's, of every layer); positions before its length `start`
        # are the clean run's in every variant
        self.prefix, self.start = prefix, prefix.length
        self.last = graph.n_layers - 1

    def _prefix_kv(self, v: int, layers: range) -> KVCache:
        """The prefix's cache of `layers` for v variants of the batch (each variant's rows a copy), its length `start`."""
        return self.prefix.repeated(v, layers)

    def _skip_attention_and_mlp(self, rows: int, pos: int) -> dict[str, torch.Tensor]:
        """Patches fixing z and mlp_out of the layer being run, so that it computes only ln1 and q, k, v."""
        cfg, zero = self.model.config, self.delta.new_zeros(())
        return {"attn.z": zero.expand(rows, pos, cfg.n_heads, cfg.d_head), "mlp_out": zero.expand(rows, pos, cfg.d_model)}

    def _moved_qkv(self, part: list[tuple[int, int]], mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """{"q", "k", "v": (variant * batch, pos - start, head, d_head)}: the clean run's values, each variant's head
        replaced (at its site) by the projection of its moved input."""
        model, layer, H, (b, pos), p = self.model, self.layer, self.graph.n_heads, self.batch.clean.shape, self.start
        senders = sorted({s for _, s in part})
        u, v = len(senders), len(part)
        moved_in = self.cache[f"blocks.{layer}.resid_pre"][:, p:].repeat(u, 1, 1) + \
            self.delta[senders][:, :, p:].reshape(u * b, pos - p, self.delta.shape[-1])  # (sender * batch, pos - start, d_model)
        patch = {f"blocks.{layer}.{k}": t for k, t in self._skip_attention_and_mlp(u * b, pos - p).items()}
        names = [f"blocks.{layer}.attn.{x}" for x in "qkv"]
        # q, k, v are per position: the attention this pass skips (z fixed) needs no mask and no earlier keys
        _, projected = model.run_from(layer, moved_in, patch=patch, names=names, stop_at_layer=layer + 1)
        index = {s: i for i, s in enumerate(senders)}
        out = {}
        for x_i, x in enumerate("qkv"):  # all three, so that the block runs no projection of its own
            clean = self.cache[names[x_i]][:, p:]  # (batch, pos - start, head, d_head)
            values = clean.repeat(v, 1, 1, 1)  # (variant * batch, pos - start, head, d_head)
            mine = [(j, (r - self.first) % H, index[s]) for j, (r, s) in enumerate(part) if (r - self.first) // H == x_i]
            if mine:
                js, hs, us = (torch.tensor(c, device=moved_in.device) for c in zip(*mine))
                values.view(v, *clean.shape)[js, :, :, hs] = projected[names[x_i]].view(u, *clean.shape)[us, :, :, hs]
            out[x] = values
        return out

    def _patch(self, part: list[tuple[int, int]], at: slice) -> dict:
        """mlp_in or the last resid_post moved at positions `at` (this layer's attention is the clean run's)."""
        b, v, name = self.batch.clean.shape[0], len(part), f"blocks.{self.layer}.{self.site}"
        d = self.delta[:, :, at][[s for _, s in part]].reshape(v * b, -1, self.delta.shape[-1])  # variant-major
        return {f"blocks.{self.layer}.attn_out": self.cache[f"blocks.{self.layer}.attn_out"][:, at].repeat(v, 1, 1),
                name: self.cache[name][:, at].repeat(v, 1, 1) + d}

    def run(self, part: list[tuple[int, int]]) -> torch.Tensor:
        """Logits of the chunk's variants: (variant * batch, pos or 1, d_vocab) (1: the last position only). Positions
        from `start` on are computed, on the prefix's keys and values."""
        model, v, mask, p = self.model, len(part), self.batch.attention_mask, self.start
        rows = None if mask is None else mask.repeat(v, 1)  # (variant * batch, pos)
        resid = self.cache[f"blocks.{self.layer}.resid_pre"][:, p:].repeat(v, 1, 1)  # (variant * batch, pos - start, d_model)
        moved = self._moved_qkv(part, mask) if self.site == "qkv_input" else {}
        sites = {f"blocks.{self.layer}.attn.{x}": t for x, t in moved.items()}
        everywhere = sites if self.site == "qkv_input" else self._patch(part, slice(p, None))
        if not self.tail:  # every position unembedded: no prefix (start is 0)
            at = None
            if self.last_only:
                at = torch.zeros(resid.shape[:2], dtype=torch.bool, device=resid.device)
                at[:, -1] = True
            out = model.run_from(self.layer, resid, patch=everywhere, attention_mask=rows, logits_at=at)
            return out[:, None] if at is not None else out
        if self.layer < self.last:  # (an MLP receiver's layer keeps the clean attn_out: it needs no keys)
            first = self.layer + (self.site != "qkv_input")
            kv = self._prefix_kv(v, range(first, self.last)) if p else None
            x = model.run_from(self.layer, resid, patch=everywhere, kv=kv, attention_mask=rows, stop_at_layer=self.last)
            return self._last_block(x, rows)
        last = slice(-1, None)
        if self.site != "qkv_input":  # only the last position's MLP input or final residual moves
            return model.run_from(self.last, resid[:, last], patch=self._patch(part, last),
                                  attention_mask=None if rows is None else rows[:, last])
        L = self.last
        kv = self._prefix_kv(v, range(L, L + 1))  # the earlier positions' keys and values, moved heads included
        kv.update(L, moved["k"][:, :-1], moved["v"][:, :-1])
        kv.advance(resid.shape[1] - 1)
        return model.run_from(L, resid[:, last], kv=kv, patch={k: t[:, last] for k, t in sites.items()},
                              attention_mask=rows)

    def _last_block(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """The last block on x (variant * batch, pos - start, d_model), queries at the last position only: logits
        (variant * batch, 1, d_vocab). The keys and values of the positions before come from the prefix and, from
        `start` on, from a pass that skips attention and the MLP."""
        model, L, n = self.model, self.last, x.shape[1]
        kv = self._prefix_kv(x.shape[0] // self.batch.clean.shape[0], range(L, L + 1))
        if n > 1:
            patch = {f"blocks.{L}.{k}": t for k, t in self._skip_attention_and_mlp(x.shape[0], n - 1).items()}
            model.run_from(L, x[:, :-1], kv=kv, patch=patch, stop_at_layer=L + 1,
                           attention_mask=None if rows is None else rows[:, :-1])
        return model.run_from(L, x[:, -1:], kv=kv, attention_mask=rows)


def _chunks(graph: Graph, variants: list[tuple[int, int]], layer: int, site: str, first: int, tail: bool,
            b: int, pos: int, d_model: int) -> list[list[tuple[int, int]]]:
    """The group's variants in forwards of about VARIANT_FLOATS residual floats (b * pos tokens each, pos counted from
    the shared prefix on; with `tail`, the last layer's MLP and logits variants run b tokens, its q/k/v ones count half
    their keys and values)."""
    budget = max(1, VARIANT_FLOATS // d_model)  # tokens per forward
    if tail and layer == graph.n_layers - 1:  # the last layer's receivers run the last position
        tokens = b if site != "qkv_input" else max(1, b * pos // 2)  # (q/k/v: their keys and values are stored)
    else:
        tokens = b * pos
    size = max(1, budget // tokens)
    return [variants[i:i + size] for i in range(0, len(variants), size)]


def _prefix_cache(model: Model, cache: dict[str, torch.Tensor], batch: Pairs, start: int) -> KVCache:
    """A key/value cache of every layer holding the clean run's recorded keys and values of the first `start`
    positions (the prompts' shared prefix), its length `start`; each forward of variants repeats it (KVCache.repeated)."""
    (b, pos), W = batch.clean.shape, model.W_E
    kv = KVCache(model.config, b, pos, device=W.device, dtype=W.dtype)
    if start:
        for l in range(model.config.n_layers):
            kv.keys[l][:, :start] = cache[f"blocks.{l}.attn.k"][:, :start]
            kv.values[l][:, :start] = cache[f"blocks.{l}.attn.v"][:, :start]
        kv.advance(start)
    return kv


@torch.no_grad()
def exact_method(model: Model, graph: Graph, batch: Pairs, metric: Metric, advance: Callable[[float], None]) -> torch.Tensor:
    """One batch's sum over pairs of m(only s -> r corrupted) - m(clean) for every edge, float64 (n_senders, n_receivers)."""
    L, (b, pos) = graph.n_layers, batch.clean.shape
    mask = batch.attention_mask
    corrupted_out, _ = record_corrupted(model, graph, batch.corrupted, mask)
    clean_out = torch.empty_like(corrupted_out)
    names = [f"blocks.{l}.{site}" for l in range(L) for site in ("resid_pre", "attn_out", "mlp_in", "attn.q", "attn.k",
                                                                  "attn.v")]
    names.append(f"blocks.{L - 1}.resid_post")
    logits, recorded = model.run_with_cache(batch.clean, names=names, attention_mask=mask,
                                            patch=SenderTaps(model, graph, clean_out).patches())
    cache = {name: recorded[name] for name in names}
    clean_metric = run_metric(metric, logits, batch)  # (batch,)
    last_only = reads_last_position(metric, batch, model.config.d_vocab)
    tail = last_only and pos > 1
    prefix = _prefix_cache(model, cache, batch, shared_length(batch) if tail else 0)
    delta = corrupted_out - clean_out  # (n_senders, batch, pos, d_model): corrupted - clean
    moved = delta.flatten(1).abs().amax(1) > 0  # (n_senders,): senders whose output differs at all
    sums = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    for layer, site, receivers in exact_groups(graph):
        n = graph.senders_before(receivers[0])
        # one edge each, sender-major: a chunk's variants share few senders, so few projections of moved inputs
        variants = [(r, s) for s in range(n) if bool(moved[s]) for r in receivers]
        advance(n * len(receivers) - len(variants))  # edges whose sender does not change: exactly 0
        runner = _Variants(model, graph, batch, cache, delta, last_only, layer, site, receivers[0], prefix)
        for part in _chunks(graph, variants, layer, site, receivers[0], tail, b, pos - prefix.length,
                            model.config.d_model):
            rows = _repeat(batch, len(part))
            values = (run_metric(metric, runner.run(part), rows).view(len(part), b) - clean_metric).double().sum(1).cpu()
            for (r, s), value in zip(part, values):  # (variant,)
                sums[s, r] += value
            advance(len(part))
    return sums
