"""Exact edge scores: every edge patched alone, m(only s -> r carrying its corrupted output) - m(clean), per pair.

The recipe of the exact edge-patched forward (minineo.discovery.patched) for one edge at a time, made cheap: a variant
starts at its receiver's layer from the clean run's recorded residual (`Model.run_from`) with the receiver's input moved
by the sender's (corrupted - clean) output; variants (all of a layer's q/k/v receivers together) are batched up to
VARIANT_TOKENS tokens per forward; a sender whose two outputs are equal scores exactly 0 without a forward; edges into
an MLP or the logits skip their layer's attention (attn_out fixed to the clean run's); when the metric reads only the
last position, only that position is unembedded. Measured at GPT-2-small shape (16 pairs x 16 tokens): about 0.14
forward passes of the batch per edge on average (0.34 for a layer-0 receiver, 0.045 for a layer-11 one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs
from minineo.discovery.patched import QKV_SITES, SenderTaps, record_corrupted, run_metric

if TYPE_CHECKING:
    from minineo.forward.model import Model

VARIANT_TOKENS = 4096  # tokens per batched forward of exact's variants


# ---- exact -------------------------------------------------------------------------------------------------

def _repeat(batch: Pairs, v: int) -> Pairs:
    mask = None if batch.attention_mask is None else batch.attention_mask.repeat(v, 1)
    return Pairs(batch.clean.repeat(v, 1), batch.corrupted.repeat(v, 1), mask, batch.answer.repeat(v),
                 batch.wrong.repeat(v))


def reads_last_position(metric: Metric, batch: Pairs, d_vocab: int) -> bool:
    """Whether metric(logits) == metric(logits[:, -1:]) on random logits of the batch's shape: then only the last
    position needs unembedding (logit_diff reads only it)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*batch.clean.shape, d_vocab, generator=g).to(batch.clean.device)  # (n, pos, d_vocab)
    try:
        last, full = metric(logits[:, -1:], batch), metric(logits, batch)
    except Exception:  # the metric reads other positions
        return False
    return isinstance(last, torch.Tensor) and isinstance(full, torch.Tensor) and last.shape == full.shape \
        and bool(torch.equal(last, full))


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


@torch.no_grad()
def exact_method(model: Model, graph: Graph, batch: Pairs, metric: Metric, advance: Callable[[float], None]) -> torch.Tensor:
    """One batch's sum over pairs of m(only s -> r corrupted) - m(clean) for every edge, float64 (n_senders, n_receivers)."""
    L, H, b, pos = graph.n_layers, graph.n_heads, *batch.clean.shape
    mask = batch.attention_mask
    corrupted_out, _ = record_corrupted(model, graph, batch.corrupted, mask)
    clean_out = torch.empty_like(corrupted_out)
    names = [f"blocks.{l}.{site}" for l in range(L) for site in ("resid_pre", "attn_out", "mlp_in")]
    names.append(f"blocks.{L - 1}.resid_post")
    logits, cache = model.run_with_cache(batch.clean, names=names, attention_mask=mask,
                                         patch=SenderTaps(model, graph, clean_out).patches())
    clean_metric = run_metric(metric, logits, batch)  # (batch,)
    last_only = reads_last_position(metric, batch, model.config.d_vocab)
    delta = corrupted_out - clean_out  # (n_senders, batch, pos, d_model): corrupted - clean
    moved = delta.flatten(1).abs().amax(1) > 0  # (n_senders,): senders whose output differs at all
    sums = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    chunk = max(1, VARIANT_TOKENS // (b * pos))
    for layer, site, receivers in exact_groups(graph):
        n = graph.senders_before(receivers[0])
        variants = [(r, s) for r in receivers for s in range(n) if bool(moved[s])]  # one edge each
        advance(n * len(receivers) - len(variants))  # edges whose sender does not change: exactly 0
        for start in range(0, len(variants), chunk):
            part = variants[start:start + chunk]
            v = len(part)
            resid = cache[f"blocks.{layer}.resid_pre"].repeat(v, 1, 1)  # (variant * batch, pos, d_model)
            if site == "qkv_input":  # each variant moves one head's q, k or v input
                patch = {}
                for x, name in enumerate(QKV_SITES):
                    mine = [(j, (r - receivers[0]) % H, s) for j, (r, s) in enumerate(part)
                            if (r - receivers[0]) // H == x]
                    if mine:
                        js, hs, ss = zip(*mine)
                        patch[f"blocks.{layer}.{name}"] = _head_mover(delta[list(ss)], list(js), list(hs), v, b)
            else:  # mlp_in or the last resid_post: this layer's attention is the clean run's
                name = f"blocks.{layer}.{site}"
                d = delta[[s for _, s in part]].reshape(v * b, pos, -1)  # variant-major
                patch = {f"blocks.{layer}.attn_out": cache[f"blocks.{layer}.attn_out"].repeat(v, 1, 1),
                         name: cache[name].repeat(v, 1, 1) + d}
            rows = _repeat(batch, v)
            at = None
            if last_only:
                at = torch.zeros(v * b, pos, dtype=torch.bool, device=resid.device)
                at[:, -1] = True
            out = model.run_from(layer, resid, patch=patch, attention_mask=rows.attention_mask, logits_at=at)
            out = out[:, None] if last_only else out  # (variant * batch, pos or 1, d_vocab)
            values = (run_metric(metric, out, rows).view(v, b) - clean_metric).double().sum(1).cpu()  # (variant,)
            for (r, s), value in zip(part, values):
                sums[s, r] += value
            advance(v)
    return sums
