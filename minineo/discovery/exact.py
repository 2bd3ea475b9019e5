"""Exact edge scores: every edge patched alone, m(only s -> r carrying its corrupted output) - m(clean), per pair.

The recipe of the exact edge-patched forward (minineo.discovery.patched) for one edge at a time, made cheap: a variant
starts at its receiver's layer from the clean run's recorded residual (`Model.run_from`) with the receiver's input moved
by the sender's (corrupted - clean) output; variants are batched up to VARIANT_FLOATS residual floats per forward; a
sender whose two outputs are equal scores exactly 0 without a forward; edges into an MLP or the logits skip their
layer's attention (attn_out fixed to the clean run's). When the metric reads only the last position (logit_diff), the
last block runs its queries, attention output and MLP there alone (`_Variants`): the keys and values of the earlier
positions come from the clean run when only a query moves, else from a pass with attention and the MLP skipped (z and
mlp_out fixed); the last layer's MLP and logits receivers run one position. Measured at GPT-2-small shape (16 pairs x
16 tokens) and on the zoo (64 IOI pairs): benchmarks/README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from minineo.discovery.engine import QKV_SITES, reads_last_position, run_metric
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs
from minineo.discovery.patched import SenderTaps, record_corrupted
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


def _head_mover(d: torch.Tensor, variants: list[int], heads: list[int], v: int, b: int):
    """A patch function adding d[i] (batch, pos, d_model) to head heads[i]'s input in variant variants[i]."""
    js, hs = torch.tensor(variants, device=d.device), torch.tensor(heads, device=d.device)

    def move(x: torch.Tensor) -> torch.Tensor:  # (variant * batch, pos, head, d_model), a copy the block made
        view = x.view(v, b, *x.shape[1:])
        view[js, :, :, hs] += d  # (k, batch, pos, d_model): one (variant, head) per row
        return x
    return move


class _Variants:
    """One batch's variants of one group of receivers (exact_groups): each moves one receiver's input by one sender's
    (corrupted - clean) output and runs from the receiver's layer. With a metric of the last position only, the last
    block runs its queries, attention output and MLP at that position alone: its keys and values come from a first
    pass over the earlier positions with the MLP skipped (mlp_out fixed), or, when only queries move, from the clean
    run; the MLP's and the logits' receivers of the last layer need no attention at all."""

    def __init__(self, model: Model, graph: Graph, batch: Pairs, cache: dict[str, torch.Tensor], delta: torch.Tensor,
                 last_only: bool, layer: int, site: str, first: int):
        self.model, self.graph, self.batch, self.cache, self.delta = model, graph, batch, cache, delta
        self.last_only, self.tail = last_only, last_only and batch.clean.shape[1] > 1
        self.layer, self.site, self.first = layer, site, first
        self.last = graph.n_layers - 1

    def _patch(self, part: list[tuple[int, int]], at: slice) -> dict:
        """The chunk's receiver moves at positions `at` of the layer's sites."""
        H, (b, pos), v = self.graph.n_heads, self.batch.clean.shape, len(part)
        name = f"blocks.{self.layer}.{self.site}"
        if self.site == "qkv_input":  # each variant moves one head's q, k or v input
            patch = {}
            for x, site in enumerate(QKV_SITES):
                mine = [(j, (r - self.first) % H, s) for j, (r, s) in enumerate(part) if (r - self.first) // H == x]
                if mine:
                    js, hs, ss = zip(*mine)
                    patch[f"blocks.{self.layer}.{site}"] = _head_mover(self.delta[list(ss)][:, :, at], list(js),
                                                                      list(hs), v, b)
            return patch
        # mlp_in or the last resid_post: this layer's attention is the clean run's
        d = self.delta[[s for _, s in part]][:, :, at].reshape(v * b, -1, self.delta.shape[-1])  # variant-major
        return {f"blocks.{self.layer}.attn_out": self.cache[f"blocks.{self.layer}.attn_out"][:, at].repeat(v, 1, 1),
                name: self.cache[name][:, at].repeat(v, 1, 1) + d}

    def run(self, part: list[tuple[int, int]]) -> torch.Tensor:
        """Logits of the chunk's variants: (variant * batch, pos or 1, d_vocab) (1: the last position only)."""
        model, v, mask = self.model, len(part), self.batch.attention_mask
        rows = None if mask is None else mask.repeat(v, 1)  # (variant * batch, pos)
        resid = self.cache[f"blocks.{self.layer}.resid_pre"].repeat(v, 1, 1)  # (variant * batch, pos, d_model)
        everywhere = slice(None)
        if not self.tail:
            at = None
            if self.last_only:
                at = torch.zeros(resid.shape[:2], dtype=torch.bool, device=resid.device)
                at[:, -1] = True
            out = model.run_from(self.layer, resid, patch=self._patch(part, everywhere), attention_mask=rows, logits_at=at)
            return out[:, None] if at is not None else out
        if self.layer < self.last:
            x = model.run_from(self.layer, resid, patch=self._patch(part, everywhere), attention_mask=rows,
                               stop_at_layer=self.last)
            return self._last_block(x, lambda at: {}, rows, keys_move=True)
        if self.site != "qkv_input":  # only the last position's MLP input or final residual moves
            last = slice(-1, None)
            return model.run_from(self.last, resid[:, last], patch=self._patch(part, last),
                                  attention_mask=None if rows is None else rows[:, last])
        H = self.graph.n_heads
        keys_move = any((r - self.first) // H > 0 for r, _ in part)  # a k or v input moves
        return self._last_block(resid, lambda at: self._patch(part, at), rows, keys_move)

    def _last_block(self, x: torch.Tensor, patch_at, rows: torch.Tensor | None, keys_move: bool) -> torch.Tensor:
        """The last block on x (variant * batch, pos, d_model), queries at the last position only: logits
        (variant * batch, 1, d_vocab). patch_at(positions) gives the block's patches at those positions."""
        model, L, pos = self.model, self.last, x.shape[1]
        kv = KVCache(model.config, x.shape[0], pos, device=x.device, dtype=x.dtype, layers=range(L, L + 1))
        early = slice(0, pos - 1)
        if keys_move:  # keys and values of the earlier positions, computed with attention and the MLP skipped
            zero = x.new_zeros(())
            patch = {**patch_at(early), f"blocks.{L}.mlp_out": zero.expand(x.shape[0], pos - 1, x.shape[2]),
                     f"blocks.{L}.attn.z": zero.expand(x.shape[0], pos - 1, model.config.n_heads, model.config.d_head)}
            model.run_from(L, x[:, early], kv=kv, patch=patch, attention_mask=None if rows is None else rows[:, early],
                           stop_at_layer=L + 1)
        else:  # only queries move: the clean run's keys and values
            v = x.shape[0] // self.batch.clean.shape[0]
            kv.update(L, self.cache[f"blocks.{L}.attn.k"][:, early].repeat(v, 1, 1, 1),
                      self.cache[f"blocks.{L}.attn.v"][:, early].repeat(v, 1, 1, 1))
            kv.advance(pos - 1)
        return model.run_from(L, x[:, pos - 1:], kv=kv, patch=patch_at(slice(pos - 1, pos)), attention_mask=rows)


def _chunks(graph: Graph, variants: list[tuple[int, int]], layer: int, site: str, first: int, tail: bool,
            b: int, pos: int, d_model: int) -> list[list[tuple[int, int]]]:
    """The group's variants in forwards of about VARIANT_FLOATS residual floats; with `tail`, the last layer's variants
    that move only the last position (queries, MLP input, final residual) run b tokens each, the others b * pos."""
    budget = max(1, VARIANT_FLOATS // d_model)  # tokens per forward
    short = tail and layer == graph.n_layers - 1
    kinds: list[list[tuple[int, int]]] = [[], []]  # (last position only, every position)
    for r, s in variants:
        query = site != "qkv_input" or (r - first) // graph.n_heads == 0
        kinds[0 if short and query else 1].append((r, s))
    chunks = []
    for kind, tokens in zip(kinds, (b * (1 if site != "qkv_input" else pos // 2 + 1), b * pos)):
        size = max(1, budget // tokens)
        chunks += [kind[i:i + size] for i in range(0, len(kind), size)]
    return chunks


@torch.no_grad()
def exact_method(model: Model, graph: Graph, batch: Pairs, metric: Metric, advance: Callable[[float], None]) -> torch.Tensor:
    """One batch's sum over pairs of m(only s -> r corrupted) - m(clean) for every edge, float64 (n_senders, n_receivers)."""
    L, H, b, pos = graph.n_layers, graph.n_heads, *batch.clean.shape
    mask = batch.attention_mask
    corrupted_out, _ = record_corrupted(model, graph, batch.corrupted, mask)
    clean_out = torch.empty_like(corrupted_out)
    names = [f"blocks.{l}.{site}" for l in range(L) for site in ("resid_pre", "attn_out", "mlp_in")]
    names += [f"blocks.{L - 1}.resid_post", f"blocks.{L - 1}.attn.k", f"blocks.{L - 1}.attn.v"]
    logits, recorded = model.run_with_cache(batch.clean, names=names, attention_mask=mask,
                                            patch=SenderTaps(model, graph, clean_out).patches())
    cache = {name: recorded[name] for name in names}
    clean_metric = run_metric(metric, logits, batch)  # (batch,)
    last_only = reads_last_position(metric, batch, model.config.d_vocab)
    tail = last_only and pos > 1
    delta = corrupted_out - clean_out  # (n_senders, batch, pos, d_model): corrupted - clean
    moved = delta.flatten(1).abs().amax(1) > 0  # (n_senders,): senders whose output differs at all
    sums = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    for layer, site, receivers in exact_groups(graph):
        n = graph.senders_before(receivers[0])
        variants = [(r, s) for r in receivers for s in range(n) if bool(moved[s])]  # one edge each
        advance(n * len(receivers) - len(variants))  # edges whose sender does not change: exactly 0
        runner = _Variants(model, graph, batch, cache, delta, last_only, layer, site, receivers[0])
        for part in _chunks(graph, variants, layer, site, receivers[0], tail, b, pos, model.config.d_model):
            rows = _repeat(batch, len(part))
            values = (run_metric(metric, runner.run(part), rows).view(len(part), b) - clean_metric).double().sum(1).cpu()
            for (r, s), value in zip(part, values):  # (variant,)
                sums[s, r] += value
            advance(len(part))
    return sums
