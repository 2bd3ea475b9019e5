"""Edge scores in EAP-IG's form: EAP, EAP-IG (inputs, activations), clean-corrupted, and exact patching.

Every score is in the noising form, a per-pair mean: score(s -> r) estimates m(clean run with only s -> r carrying
its corrupted-run output) - m(clean run). The gradient methods (hannamw/EAP-IG, eap/attribute.py; Hanna et al., COLM
2024) all compute, summed over positions and pairs and divided by the number of pairs,

    (s's corrupted output - s's clean output) . g_r,

with g_r a gradient of the metric at receiver r's input (the head's own q/k/v input, mlp_in, the last resid_post):
- "eap" (Syed et al. 2023): g on the clean run (one forward on each input, one backward);
- "eap-ig-inputs": the mean of g over `ig_steps` runs whose token embedding is corrupted + k/m (clean - corrupted),
  k = 0..m-1 (corrupted included, clean not), the rest of the run on the clean prompt;
- "eap-ig-activations": the mean of g over runs where one node (the input, one layer's heads all together, or one MLP)
  outputs k/m clean + (1 - k/m) corrupted, k = 1..m, taken over every node and step ((1 + 2 n_layers) m runs; EAP-IG's
  get_scores_ig_activations);
- "clean-corrupted": the mean of g on the clean run and g on the corrupted run.
"exact" patches every edge alone through the exact edge-patched forward's recipe (minineo.discovery.patched): a
variant starts at its receiver's layer from the clean run's recorded residual (`Model.run_from`), with the receiver's
input moved by (corrupted - clean) output of the sender; variants are batched; senders whose two outputs are equal score
exactly 0 without a forward; edges into the logits and MLPs skip their layer's attention; when the metric reads only
the last position (checked on the clean run), only that position is unembedded.

`per_position=True` (position-aware edge attribution, Haklay et al., ACL 2025) keeps the position axis for the
gradient methods: `graph.position_scores` (pos, n_senders, n_receivers), whose sum over positions is `graph.scores`.

Under torch.distributed (torchrun; minineo.data.harvest.init_distributed), rank r scores pairs r, r + world, ... and
the float64 sums and the pair count are all-reduced, so every rank ends with the same scores.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable

import torch
import torch.distributed as dist

from minineo import checks
from minineo import progress
from minineo.discovery.exact import exact_groups, exact_method, reads_last_position
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.discovery.patched import (SenderTaps, check_graph, check_pairs, record_corrupted,
                                       run_metric)
from minineo.errors import UserError
from minineo.record.recording import Recorder

if TYPE_CHECKING:
    from minineo.forward.model import Model

METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact")
GRADIENT_METHODS = METHODS[:4]


# ---- gradients at the receivers' inputs ---------------------------------------------------------------------

class ReceiverTaps:
    """Patch functions that keep, unchanged, the tensors whose gradients give every receiver's: each layer's q, k, v
    (batch, pos, head, d_head) and resid_pre (a detached copy), mlp_in, and the last resid_post.

    The run stays on the fused path: no per-head copies of the residual (TransformerLens's use_split_qkv_input costs
    memory x n_heads). A head's q input feeds only its query, so d m / d q_input[h] = J^T (W_Q[h] dq_h) with J the
    Jacobian of ln1 at resid_pre: `head_input_grads` takes that vector-Jacobian product through the block's own ln1."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.names = [f"blocks.{l}.attn.{x}" for l in range(n_layers) for x in "qkv"]
        self.names += [f"blocks.{l}.mlp_in" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.resid_post"]
        self.inputs: dict[str, torch.Tensor] = {}
        self.resid_pre: dict[int, torch.Tensor] = {}

    def patches(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        def keep(x: torch.Tensor, name: str) -> torch.Tensor:
            self.inputs[name] = x
            return x

        def keep_resid(x: torch.Tensor, layer: int) -> torch.Tensor:
            self.resid_pre[layer] = x.detach()
            return x

        patches = {name: (lambda x, name=name: keep(x, name)) for name in self.names}
        patches.update({f"blocks.{l}.resid_pre": (lambda x, l=l: keep_resid(x, l)) for l in range(self.n_layers)})
        return patches


def head_input_grads(model: Model, layer: int, resid_pre: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor,
                     dv: torch.Tensor) -> torch.Tensor:
    """d m / d (each head's q, k, v input), stacked (batch, pos, 3 * head, d_model) in EAP-IG's receiver order
    (q heads, k heads, v heads), from the gradients at q, k, v (batch, pos, head, d_head) and the run's resid_pre."""
    attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
    # W_x[h] dx_h: (batch, pos, head, d_model) per x, the cotangent at ln1's output as head h's x reads it
    cotangent = torch.cat([torch.einsum("bphe,hde->bphd", g, W) for g, W in ((dq, attn.W_Q), (dk, attn.W_K),
                                                                           (dv, attn.W_V))], dim=2)
    with torch.enable_grad():
        x = resid_pre[:, :, None].expand_as(cotangent).detach().requires_grad_()  # one copy of ln1's input per receiver
        normed = ln1(x, Recorder(), "ln1.")  # the block's own LayerNorm (the same call the forward makes)
        (grad,) = torch.autograd.grad(normed, x, cotangent)
    return grad


def gradients(
    model: Model, graph: Graph, tokens: torch.Tensor, batch: Pairs, metric: Metric,
    patch: dict[str, Callable[[torch.Tensor], torch.Tensor] | torch.Tensor], last_only: bool = False,
) -> dict[str, torch.Tensor]:
    """d sum_pairs metric / d (each receiver's input) in one forward and one backward on `tokens` with `patch`:
    {f"blocks.{L}.qkv_input": (batch, pos, 3 * head, d_model) (q, k, v heads), f"blocks.{L}.mlp_in" and the last
    resid_post: (batch, pos, d_model)}. last_only: the metric reads only the last position, which alone is unembedded.

    The token embedding enters as a leaf that requires grad (its value unchanged), so the graph exists whatever the
    parameters' requires_grad; a receiver with no path to the metric (its head's z replaced) gets zeros."""
    taps = ReceiverTaps(graph.n_layers)
    patch = dict(patch)
    inner = patch.get("embed")

    def embed_leaf(x: torch.Tensor) -> torch.Tensor:
        x = inner(x) if callable(inner) else (inner if inner is not None else x)
        return x.detach().requires_grad_()

    patch["embed"] = embed_leaf
    patch.update(taps.patches())
    with torch.enable_grad():
        logits = logits_of(model, tokens, batch, patch, last_only)  # (batch, pos or 1, d_vocab)
        value = run_metric(metric, logits, batch).sum()
        inputs = [taps.inputs[name] for name in taps.names]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    found = {name: torch.zeros_like(x) if g is None else g for name, x, g in zip(taps.names, inputs, grads)}
    out = {}
    for layer in range(graph.n_layers):
        q, k, v = (found.pop(f"blocks.{layer}.attn.{x}") for x in "qkv")
        out[f"blocks.{layer}.qkv_input"] = head_input_grads(model, layer, taps.resid_pre[layer], q, k, v)
    return out | found


def contract(graph: Graph, difference: torch.Tensor, grads: dict[str, torch.Tensor], per_position: bool) -> torch.Tensor:
    """sum over pairs (and positions, unless per_position) of difference[s] . grad[r] for every edge, float64:
    (n_senders, n_receivers), or (pos, n_senders, n_receivers). difference (n_senders, batch, pos, d_model)."""
    H, pos = graph.n_heads, difference.shape[2]
    out = torch.zeros((pos,) * per_position + (graph.n_senders, graph.n_receivers), dtype=torch.float64)

    def dot(n: int, grad: torch.Tensor) -> torch.Tensor:
        # difference[:n] (n, batch, pos, d_model) . grad (batch, pos, [r,] d_model) -> ([pos,] n[, r])
        if per_position:
            return torch.einsum("sbpd,bprd->psr" if grad.ndim == 4 else "sbpd,bpd->ps", difference[:n], grad)
        flat = difference[:n].reshape(n, -1)  # a view
        if grad.ndim == 4:
            return flat @ grad.permute(2, 0, 1, 3).reshape(grad.shape[2], -1).T  # (n, r)
        return flat @ grad.reshape(-1)

    for layer in range(graph.n_layers):
        base = graph.receiver_index(layer, 0, "q")
        n = graph.senders_before(base)
        out[..., :n, base: base + 3 * H] += dot(n, grads[f"blocks.{layer}.qkv_input"]).double().cpu()
        r = graph.receiver_index(layer)
        out[..., :graph.senders_before(r), r] += dot(graph.senders_before(r), grads[f"blocks.{layer}.mlp_in"]).double().cpu()
    last = grads[f"blocks.{graph.n_layers - 1}.resid_post"]
    out[..., :, graph.logits_index] += dot(graph.n_senders, last).double().cpu()
    return out


class ZTaps:
    """Patch functions keeping every layer's z (batch, pos, head, d_head), for eap-ig-activations' interpolation."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.z: dict[int, torch.Tensor] = {}

    def wrap(self, patch: dict) -> dict:
        patch = dict(patch)
        for layer in range(self.n_layers):
            name, inner = f"blocks.{layer}.attn.z", patch.get(f"blocks.{layer}.attn.z")

            def keep(z: torch.Tensor, layer=layer, inner=inner) -> torch.Tensor:
                self.z[layer] = z.detach().clone()
                return inner(z) if inner is not None else z
            patch[name] = keep
        return patch


@torch.no_grad()
def clean_and_corrupted(model: Model, graph: Graph, batch: Pairs, z: bool = False):
    """Sender outputs of both runs, each (n_senders, batch, pos, d_model); with z=True also both runs' z per layer."""
    dtype, device = model.W_E.dtype, model.W_E.device
    shape = (graph.n_senders, *batch.clean.shape, model.config.d_model)
    outs, zs = [], []
    for tokens in (batch.clean, batch.corrupted):
        out = torch.empty(shape, dtype=dtype, device=device)
        taps = ZTaps(graph.n_layers)
        patch = SenderTaps(model, graph, out).patches()
        model(tokens, attention_mask=batch.attention_mask, patch=taps.wrap(patch) if z else patch,
              stop_at_layer=graph.n_layers)
        outs.append(out)
        zs.append(taps.z)
    return (*outs, *zs) if z else tuple(outs)


def gradient_method(model: Model, graph: Graph, batch: Pairs, metric: Metric, method: str, ig_steps: int,
                    per_position: bool, advance: Callable[[float], None]) -> torch.Tensor:
    """One batch's sum over pairs of a gradient method's edge contributions (see the module docstring), float64."""
    L = graph.n_layers
    last = reads_last_position(metric, batch, model.config.d_vocab)
    if method == "eap":
        corrupted_out, _ = record_corrupted(model, graph, batch.corrupted, batch.attention_mask)
        clean_out = torch.empty_like(corrupted_out)
        grads = gradients(model, graph, batch.clean, batch, metric, SenderTaps(model, graph, clean_out).patches(), last)
        advance(1)
        return contract(graph, corrupted_out - clean_out, grads, per_position)
    if method == "clean-corrupted":
        clean_out, corrupted_out = (torch.empty(graph.n_senders, *batch.clean.shape, model.config.d_model,
                                                dtype=model.W_E.dtype, device=model.W_E.device) for _ in range(2))
        total = None
        for tokens, out in ((batch.clean, clean_out), (batch.corrupted, corrupted_out)):
            grads = gradients(model, graph, tokens, batch, metric, SenderTaps(model, graph, out).patches(), last)
            total = grads if total is None else {k: total[k] + g for k, g in grads.items()}
            advance(1)
        return contract(graph, corrupted_out - clean_out, total, per_position) / 2
    if method == "eap-ig-inputs":
        clean_out, corrupted_out = clean_and_corrupted(model, graph, batch)
        clean_embed, corrupted_embed = clean_out[0], corrupted_out[0]  # (batch, pos, d_model)
        total = None
        for k in range(ig_steps):  # k/m of the way from the corrupted to the clean embedding, k = 0..m-1
            embed = corrupted_embed + (k / ig_steps) * (clean_embed - corrupted_embed)
            grads = gradients(model, graph, batch.clean, batch, metric, {"embed": embed}, last)
            total = grads if total is None else {key: total[key] + g for key, g in grads.items()}
            advance(1)
        return contract(graph, corrupted_out - clean_out, total, per_position) / ig_steps
    # eap-ig-activations: one node at a time (the input, a layer's heads together, an MLP), interpolated
    clean_out, corrupted_out, clean_z, corrupted_z = clean_and_corrupted(model, graph, batch, z=True)
    nodes: list[tuple[str, torch.Tensor, torch.Tensor]] = [("embed", clean_out[0], corrupted_out[0])]
    for layer in range(L):
        mlp = graph.sender_index(layer)
        nodes.append((f"blocks.{layer}.attn.z", clean_z[layer], corrupted_z[layer]))
        nodes.append((f"blocks.{layer}.mlp_out", clean_out[mlp], corrupted_out[mlp]))
    total = None
    for site, clean, corrupted in nodes:
        for k in range(1, ig_steps + 1):
            alpha = k / ig_steps
            grads = gradients(model, graph, batch.clean, batch, metric, {site: alpha * clean + (1 - alpha) * corrupted},
                              last)
            total = grads if total is None else {key: total[key] + g for key, g in grads.items()}
            advance(1)
    return contract(graph, corrupted_out - clean_out, total, per_position) / (len(nodes) * ig_steps)


def logits_of(model: Model, tokens: torch.Tensor, batch: Pairs, patch: dict, last_only: bool) -> torch.Tensor:
    """model(tokens, patch=patch) logits (n, pos, d_vocab), or with last_only (n, 1, d_vocab): the same forward split
    at blocks.0.resid_pre so that `run_from` unembeds the last position only."""
    if not last_only:
        return model(tokens, attention_mask=batch.attention_mask, patch=patch)
    first = {k: v for k, v in patch.items() if k in ("embed", "pos_embed")}
    rest = {k: v for k, v in patch.items() if k not in first}
    resid = model(tokens, attention_mask=batch.attention_mask, patch=first, stop_at_layer=0)  # (n, pos, d_model)
    at = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    at[:, -1] = True
    return model.run_from(0, resid, patch=rest, attention_mask=batch.attention_mask, logits_at=at)[:, None]


# ---- the entry point ---------------------------------------------------------------------------------------

def _shard(pairs: Pairs) -> tuple[Pairs | None, int, int]:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return pairs, rank, world
    index = torch.arange(rank, len(pairs), world)
    return (pairs[index] if len(index) else None), rank, world


def _work(method: str, graph: Graph, n: int, batch_size: int, ig_steps: int) -> tuple[float, str]:
    """(progress total, its description): edges for exact (with the forward passes of a batch it should cost: a
    variant starting at layer l runs n_layers - l of the n_layers blocks), backward passes for the gradient methods."""
    batches = math.ceil(n / batch_size)
    if method == "exact":
        L = graph.n_layers
        cost = sum(graph.senders_before(rs[0]) * len(rs) * (L - layer) / L for layer, _, rs in exact_groups(graph))
        return float(graph.n_edges * batches), f"edges, about {cost * batches:.0f} forward passes of a batch"
    per_batch = {"eap": 1, "clean-corrupted": 2, "eap-ig-inputs": ig_steps,
                 "eap-ig-activations": (1 + 2 * graph.n_layers) * ig_steps}[method]
    return float(per_batch * batches), "forward and backward passes"


@checks.typed
def attribute(
    model: Model, graph: Graph, pairs: Pairs, metric: Metric = logit_diff, method: str = "eap", *,
    ig_steps: int = 5, per_position: bool = False, batch_size: int | None = None,
) -> Graph:
    """Fill `graph.scores` (n_senders, n_receivers) with every edge's score by `method`; returns the graph.

    method: "eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted" or "exact" (module docstring; EAP-IG's
    definitions, hannamw/EAP-IG eap/attribute.py). Scores are per-pair means in metric units (noising form: an
    estimate of m(only the edge corrupted) - m(clean)); 0 where a pair of nodes is no edge. ig_steps: the number of
    interpolation steps of the two EAP-IG methods (default 5). per_position (gradient methods, prompts of one length,
    no padding): also `graph.position_scores` (pos, n_senders, n_receivers). batch_size: pairs per forward (None: all).
    metric(logits (n, pos, d_vocab), pairs) -> (n,).

    Raises UserError (WrongTypeError) for an unknown method, a bad ig_steps or batch_size, per_position with exact or
    with padded prompts, a graph of another model's shape, pairs or metric of the wrong type.
    """
    check_graph(model, graph, "graph")
    check_pairs(pairs, metric, batch_size)
    if method not in METHODS:
        raise UserError(f"method={method!r} is not a scoring method; give one of {', '.join(METHODS)}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise UserError(f"ig_steps={ig_steps!r} must be a positive int (interpolation steps; EAP-IG's default use is 5)")
    if per_position and method == "exact":
        raise UserError("per_position=True is for the gradient methods (eap, eap-ig-inputs, eap-ig-activations, "
                        "clean-corrupted); exact scores whole edges, so drop per_position or pick a gradient method")
    if per_position and pairs.attention_mask is not None:
        raise UserError("per_position=True needs prompts that share one token length (no padding), so that a position "
                        "means the same token slot in every pair; give pairs of one length")
    mine, rank, world = _shard(pairs)
    device = model.W_E.device
    pos = pairs.clean.shape[1]
    sums = torch.zeros((pos,) * per_position + (graph.n_senders, graph.n_receivers), dtype=torch.float64)
    n = torch.zeros((), dtype=torch.float64)
    if mine is not None:
        size = batch_size or len(mine)
        total, unit = _work(method, graph, len(mine), size, ig_steps)
        what = f"{method} edge scores: {graph.n_edges} edges, {len(mine)} pairs, {total:.0f} {unit}"
        if world > 1:
            what += f" (rank {rank} of {world})"
        bar = progress.task(what, total=total, delay=2.0) if rank == 0 else nullcontext(lambda steps=1: None)
        with bar as advance:  # rank 0's share shows the progress of all ranks
            for batch in mine.batches(size):
                batch = batch.to(device)
                if method == "exact":
                    sums += exact_method(model, graph, batch, metric, advance)
                else:
                    sums += gradient_method(model, graph, batch, metric, method, ig_steps, per_position, advance)
                n += len(batch)
    if world > 1:
        dist.all_reduce(sums)
        dist.all_reduce(n)
    mean = (sums / n).float()
    mean[..., ~graph.real_edges] = 0.0
    if per_position:
        graph.position_scores = mean
        graph.scores = mean.sum(0)
    else:
        graph.scores = mean
    return graph
