"""The gradient engine of the EAP family (minineo.discovery.attribution): the metric's gradient at every receiver's input
on one run, and its contraction with the senders' (corrupted - clean) outputs into edge scores.

A gradient run (`gradient_run`) is one forward with autograd on the fused path and one backward to the small tensors
that the receivers' inputs feed: each layer's q, k, v (batch, pos, head, d_head), mlp_in, and the last resid_post. Head
h's q input reaches the metric only through its query, q_h = ln1(q_input[h]) @ W_Q[h] + b_Q[h], so with x = resid_pre

    d m / d q_input[h] = J^T (W_Q[h] dq_h),    J^T g = (1/sigma) (g' - mean(g') - xhat mean(g' xhat)),  g' = gamma * g,

with J the Jacobian of ln1 at x, xhat = (x - mean(x)) / sigma, sigma = sqrt(var(x) + eps), means over d_model:
LayerNorm's backward in closed form, the formula PyTorch's native_layer_norm_backward computes. A layer's 3 * n_heads
head inputs take it together (`head_input_grads`) on one reused (3 * head, pos * batch, d_model) buffer: one bmm and
two passes, with no copy of resid_pre per head (TransformerLens's use_split_qkv_input costs memory x n_heads).

With a metric of the last position only, every run starts at the prompts' first difference on the shared prefix's keys
and values (minineo.discovery.prefix), so every tensor below covers the positions from there on.

Senders enter only through their (corrupted - clean) outputs, so a run keeps its nodes compactly (`NodeTaps`: the token
embedding, each layer's z and mlp_out) and `sender_differences` writes the one buffer that the contraction (`EdgeSums`)
reads, a head's rows as (z_corrupted - z_clean)[:, :, h] @ W_O[h] (b_O cancels). Positions before the first one at
which any node differs between the two runs (`first_moved_position`: the prompts' shared prefix, by causality) carry a
difference of exactly 0 and no term of any score: the buffer, the head-input gradients and the products start there.
The buffer is position-major, (n_senders, moved pos, batch, d_model), so that those positions are one block per sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs
from minineo.discovery.patched import run_metric
from minineo.discovery.prefix import SharedPrefix

if TYPE_CHECKING:
    from minineo.forward.model import Model

RUNS_KEPT = 8  # gradient runs kept compact before EdgeSums contracts them (each: ~5 (batch, pos, d_model) per layer)


# ---- LayerNorm's backward in closed form -------------------------------------------------------------------

def layer_norm_parts(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(xhat (n, d_model), 1 / sigma (n, 1)) of LayerNorm on x (..., d_model), flattened to n rows: xhat = (x - mean) /
    sigma, sigma = sqrt(var + eps) (the biased variance over d_model, as F.layer_norm)."""
    flat = x.reshape(-1, x.shape[-1])
    var, mean = torch.var_mean(flat, dim=-1, keepdim=True, correction=0)
    inv_sigma = torch.rsqrt(var + eps)
    return (flat - mean) * inv_sigma, inv_sigma


def head_input_weights(model: Model, layer: int) -> torch.Tensor:
    """W_x[h]^T for x = q, k, v and every head h, with ln1's weight gamma folded in and centred over d_model: (3 * head,
    d_head, d_model). For the cotangent g = W_x[h] dx_h at ln1's output, dx_h @ this = g' - mean(g'), g' = gamma * g:
    the first two terms of LayerNorm's backward (module docstring), from one product."""
    block = model.blocks[layer]
    gamma, W = block.ln1.w, block.attn.W_QKV  # (d_model,), (d_model, 3 * head * d_head): GPT-2's c_attn layout
    W = torch.addcmul(-(gamma @ W)[None] / len(gamma), gamma[:, None], W)  # gamma W - its mean over d_model, one pass
    return W.view(len(gamma), -1, model.config.d_head).permute(1, 2, 0)


# ---- the taps: nodes and receivers ---------------------------------------------------------------------------

class NodeTaps:
    """Patch functions keeping every node's output compactly, each value returned unchanged: `values[site]` for `embed`
    (batch, pos, d_model), `blocks.L.attn.z` (batch, pos, head, d_head; head h's output is z[:, :, h] @ W_O[h]) and
    `blocks.L.mlp_out` (batch, pos, d_model), in `sites` order (the graph's sender order, a layer's heads as one z)."""

    def __init__(self, n_layers: int):
        self.sites = ["embed"] + [f"blocks.{l}.{site}" for l in range(n_layers) for site in ("attn.z", "mlp_out")]
        self.values: dict[str, torch.Tensor] = {}

    def patches(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        def keep(x: torch.Tensor, site: str) -> torch.Tensor:
            self.values[site] = x.detach()  # a record: never part of a gradient run's graph
            return x
        return {site: (lambda x, site=site: keep(x, site)) for site in self.sites}


@torch.no_grad()
def node_run(model: Model, graph: Graph, tokens: torch.Tensor, prefix: SharedPrefix) -> dict[str, torch.Tensor]:
    """NodeTaps' values of one forward on `tokens` from the prefix on (positions prefix.length..), stopped before
    ln_final (nothing unembedded)."""
    taps = NodeTaps(graph.n_layers)
    prefix.run(model, tokens, taps.patches(), stop_at_layer=graph.n_layers)
    return taps.values


def first_moved_position(corrupted: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> int:
    """The first position at which some node's output differs between two runs' NodeTaps values, in some pair (pos if
    none). Before it every sender's (corrupted - clean) output is exactly 0 (a head's is 0 @ W_O[h])."""
    embed = corrupted["embed"]
    moved = torch.zeros(embed.shape[1], dtype=torch.bool, device=embed.device)  # (pos,)
    for site, value in corrupted.items():
        moved |= (value != clean[site]).flatten(2).any(-1).any(0)
    return int(moved.int().argmax()) if bool(moved.any()) else embed.shape[1]


@torch.no_grad()
def sender_differences(model: Model, graph: Graph, corrupted: dict[str, torch.Tensor], clean: dict[str, torch.Tensor],
                       first: int) -> torch.Tensor:
    """Every sender's (corrupted - clean) output from position `first` on, (n_senders, pos - first, batch, d_model)
    (position-major) in the graph's sender order, from two runs' NodeTaps values: the embedding's, head h's
    (z_corrupted - z_clean)[:, :, h] @ W_O[h] (one bmm per layer, written into its rows), each MLP's."""
    batch, pos, d_model = corrupted["embed"].shape
    H, moved, d_head = graph.n_heads, pos - first, model.config.d_head

    def delta(site: str) -> torch.Tensor:  # (moved pos, batch, ...)
        return (corrupted[site][:, first:] - clean[site][:, first:]).transpose(0, 1)

    out = corrupted["embed"].new_empty(graph.n_senders, moved, batch, d_model)
    out[0] = delta("embed")
    for layer, block in enumerate(model.blocks):
        # every size spelled out: with no moved position (a batch of pairs whose prompts are the same) there are 0
        # rows, and a -1 in a reshape of 0 elements is ambiguous
        dz = delta(f"blocks.{layer}.attn.z").permute(2, 0, 1, 3).reshape(H, moved * batch, d_head)  # (head, moved * batch, d_head)
        heads = graph.sender_index(layer, 0)
        torch.bmm(dz, block.attn.W_O, out=out[heads:heads + H].view(H, moved * batch, d_model))
        out[graph.sender_index(layer)] = delta(f"blocks.{layer}.mlp_out")
    return out


class ReceiverTaps:
    """Patch functions keeping, unchanged, the tensors whose gradients give every receiver's: each layer's q, k, v
    (batch, pos, head, d_head) and ln1's input resid_pre (detached), mlp_in, and the last resid_post (batch, pos,
    d_model). The run stays on the fused path."""

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


# ---- one gradient run ----------------------------------------------------------------------------------------

@dataclass
class RunGrads:
    """One run's d (sum over pairs of the metric) / d (every receiver's input), compact. Per layer: `qkv`, the gradients
    at q, k and v (each (batch, pos, head, d_head)), and ln1's input `resid_pre` (batch, pos, d_model), from which
    `head_input_grads` gives the heads' q/k/v-input gradients; `mlp_in` (batch, pos, d_model). `resid_post`: the
    logits' input's (batch, pos, d_model)."""

    qkv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    resid_pre: list[torch.Tensor]
    mlp_in: list[torch.Tensor]
    resid_post: torch.Tensor


def logits_of(model: Model, tokens: torch.Tensor, batch: Pairs, patch: dict, prefix: SharedPrefix | None) -> torch.Tensor:
    """The logits of `tokens` with `patch`: with a prefix (a metric of the last position only) the last position's
    (n, 1, d_vocab) from a run of positions prefix.length.. on its keys and values; else model(tokens, patch=patch)'s
    (n, pos, d_vocab)."""
    if prefix is None:
        return model(tokens, attention_mask=batch.attention_mask, patch=patch)
    return prefix.run(model, tokens, patch)


def gradient_run(
    model: Model, graph: Graph, tokens: torch.Tensor, batch: Pairs, metric: Metric,
    patch: dict[str, Callable[[torch.Tensor], torch.Tensor] | torch.Tensor] | None = None,
    prefix: SharedPrefix | None = None, nodes: NodeTaps | None = None,
) -> RunGrads:
    """d sum_pairs metric / d (each receiver's input) in one forward and one backward on `tokens` with `patch`.
    prefix: the metric reads only the last position, which alone is unembedded, and the run starts at the batch's
    shared prefix (every tensor recorded, and every gradient, then covers positions prefix.length.. only; None: all
    positions). nodes: also keep this run's node outputs (a run whose nodes are not patched).

    The token embedding enters as a leaf that requires grad (its value unchanged), so the graph exists whatever the
    parameters' requires_grad; a receiver with no path to the metric (its head's z replaced) gets zeros."""
    taps = ReceiverTaps(graph.n_layers)
    patch = dict(patch or {})
    if nodes is not None:
        patch.update(nodes.patches())
    inner = patch.get("embed")

    def embed_leaf(x: torch.Tensor) -> torch.Tensor:
        x = inner(x) if callable(inner) else (inner if inner is not None else x)
        return x.detach().requires_grad_()

    patch["embed"] = embed_leaf
    patch.update(taps.patches())
    with torch.enable_grad():
        logits = logits_of(model, tokens, batch, patch, prefix)  # (batch, pos or 1, d_vocab)
        value = run_metric(metric, logits, batch).sum()
        inputs = [taps.inputs[name] for name in taps.names]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    found = {name: torch.zeros_like(x) if g is None else g for name, x, g in zip(taps.names, inputs, grads)}
    L = graph.n_layers
    return RunGrads(qkv=[tuple(found[f"blocks.{l}.attn.{x}"] for x in "qkv") for l in range(L)],
                    resid_pre=[taps.resid_pre[l] for l in range(L)],
                    mlp_in=[found[f"blocks.{l}.mlp_in"] for l in range(L)],
                    resid_post=found[f"blocks.{L - 1}.resid_post"])


# ---- from gradients to edge scores ---------------------------------------------------------------------------

def head_input_grads(model: Model, layer: int, runs: list[RunGrads], first: int, out: torch.Tensor,
                     scratch: torch.Tensor | None = None) -> torch.Tensor:
    """The sum over `runs` of d m / d (each head's q, k and v input) of `layer` at positions `first`.., written into and
    returning out (3 * head, (pos - first) * batch, d_model) (position-major rows) in EAP-IG's receiver order (q heads,
    k heads, v heads). scratch (out's shape) is needed for more than one run.

    Per run, ln1's backward in closed form (module docstring) at the run's resid_pre, for all 3 * head cotangents
    g = W_x[h] dx_h at once: (dx_h / sigma) @ head_input_weights = (g' - mean(g')) / sigma in one bmm; as mean(xhat) =
    0, mean(g' xhat) / sigma is the mean of that times xhat, and one in-place pass subtracts xhat times it."""
    heads, rows, d_model = out.shape
    W = head_input_weights(model, layer)  # (3 * head, d_head, d_model)
    eps = model.blocks[layer].ln1.eps
    for i, run in enumerate(runs):
        target = out if i == 0 else scratch
        normalized, inv_sigma = layer_norm_parts(run.resid_pre[layer][:, first:].transpose(0, 1), eps)  # (rows, d_model), (rows, 1)
        dqkv = torch.stack(run.qkv[layer])[:, :, first:]  # (3, batch, moved pos, head, d_head)
        dqkv = dqkv.permute(0, 3, 2, 1, 4).reshape(heads, rows, dqkv.shape[-1]) * inv_sigma  # (3 * head, rows, d_head)
        torch.bmm(dqkv, W, out=target)  # (g' - mean(g')) / sigma
        along = torch.einsum("rnd,nd->rn", target, normalized).unsqueeze(-1) / d_model  # mean(g' xhat) / sigma, (3 * head, rows, 1)
        target.addcmul_(normalized, along, value=-1)
        if i:
            out.add_(target)
    return out


class EdgeSums:
    """The float64 sum over pairs (and runs) of difference[s] . g[r] for every edge, g a run's gradient at receiver r's
    input: `total()` (n_senders, n_receivers), or with per_position (pos, n_senders, n_receivers) summed over pairs only.

    corrupted, clean: two runs' NodeTaps values, whose difference the sums read (sender_differences, from the first
    moved position on); they and the runs' gradients start at position `offset` of the prompts (SharedPrefix). Runs added are kept compact (RunGrads) and contracted RUNS_KEPT at a time, a layer at a time:
    the layer's summed head-input gradients (3 * head rows), the previous MLP's summed mlp_in gradient (MLP l reads the
    senders before layer l + 1 but m_l itself) and, in the last layer, the last MLP's and the logits' share one buffer
    and one product with the difference's first rows."""

    def __init__(self, model: Model, graph: Graph, corrupted: dict[str, torch.Tensor], clean: dict[str, torch.Tensor],
                 per_position: bool, offset: int = 0):
        self.model, self.graph, self.per_position = model, graph, per_position
        self.first = first_moved_position(corrupted, clean)
        self.difference = sender_differences(model, graph, corrupted, clean, self.first)  # (n_senders, moved, batch, d_model)
        self.offset = offset  # the runs' values start at this position of the prompts (a shared prefix's length)
        pos = offset + corrupted["embed"].shape[1]
        self._total = torch.zeros((pos,) * per_position + (graph.n_senders, graph.n_receivers), dtype=torch.float64)
        self._runs: list[RunGrads] = []

    def add(self, run: RunGrads) -> None:
        self._runs.append(run)
        if len(self._runs) == RUNS_KEPT:
            self._contract()

    def total(self) -> torch.Tensor:
        self._contract()
        return self._total

    def _singles(self, layer: int, runs: list[RunGrads]) -> list[tuple[int, list[torch.Tensor]]]:
        """The one-row receivers contracted with `layer`'s heads: (receiver index, each run's gradient at its input)."""
        g, L = self.graph, self.graph.n_layers
        singles = [(g.receiver_index(l), [r.mlp_in[l] for r in runs]) for l in ([layer - 1] if layer else [])]
        if layer == L - 1:
            singles += [(g.receiver_index(layer), [r.mlp_in[layer] for r in runs]),
                        (g.logits_index, [r.resid_post for r in runs])]
        return singles

    @torch.no_grad()
    def _contract(self) -> None:
        runs, self._runs = self._runs, []
        _, moved, batch, d_model = self.difference.shape
        if not runs or moved == 0:  # no position moved: every score is 0
            return
        g, H = self.graph, self.graph.n_heads
        buffer = self.difference.new_empty(3 * H + 3, moved * batch, d_model)  # one layer's receivers' gradients
        scratch = torch.empty_like(buffer[:3 * H]) if len(runs) > 1 else None
        for layer in range(g.n_layers):
            head_input_grads(self.model, layer, runs, self.first, buffer[:3 * H], scratch)
            receivers = [g.receiver_index(layer, h, x) for x in "qkv" for h in range(H)]
            for receiver, grads in self._singles(layer, runs):
                row = buffer[len(receivers)].view(moved, batch, d_model)
                row.copy_(grads[0][:, self.first:].transpose(0, 1))
                for grad in grads[1:]:
                    row.add_(grad[:, self.first:].transpose(0, 1))
                receivers.append(receiver)
            n = max(g.senders_before(r) for r in receivers)
            self._scatter(self._dot(n, buffer[:len(receivers)]), receivers)

    def _dot(self, n: int, grads: torch.Tensor) -> torch.Tensor:
        """difference[:n] (n, moved, batch, d_model) . grads (c, moved * batch, d_model), summed over pairs (and
        positions unless per_position): (n, c) or (moved, n, c), float64 on the CPU."""
        rows = self.difference[:n]
        if self.per_position:
            out = torch.einsum("spbd,cpbd->psc", rows, grads.view(len(grads), *rows.shape[1:]))
        else:
            out = rows.reshape(n, -1) @ grads.reshape(len(grads), -1).T  # views: no copy of either
        return out.double().cpu()

    def _scatter(self, products: torch.Tensor, receivers: list[int]) -> None:
        total = self._total[self.offset + self.first:] if self.per_position else self._total
        for column, receiver in enumerate(receivers):  # each receiver reads its own first senders
            n = self.graph.senders_before(receiver)
            total[..., :n, receiver] += products[..., :n, column]
