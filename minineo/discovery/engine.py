"""The edge-patched run, layer by layer: what `evaluate` and ACDC run for each circuit (semantics: minineo.discovery.patched).

A `Recording` holds one batch's corrupted run (every receiver's input, every head's z, every MLP's output; the metric
of the corrupted prompts) and the clean prompts' embedding; it is made once and serves any number of circuits. A
circuit's run (`Recording.run`) goes through the blocks one `Model.run_from(layer, ..., stop_at_layer=layer + 1)` at a
time, so each layer's receiver inputs are plain tensors built before the block runs:

- a receiver with every edge in keeps this run's value (no patch: the rebuilt sum equals it up to round-off);
- one with no edge in gets its corrupted input (a tensor, no copy: q, k and v share it, so ln1 runs on it once);
- the others ("mixed") get corrupted input + (their in-circuit columns) @ (the senders' differences), one matrix
  product per layer over every mixed receiver of the layer (q, k, v, the MLP and the logits' parts from senders of
  earlier layers); the MLP and the logits add their own layer's senders when the block reaches them.

Only the senders that feed a mixed receiver have their difference (this run's output - the corrupted one) stored,
the heads' as (z - z_corrupted) @ W_O[h] (linear in z). Layers before the first one with an edge into it start from
the corrupted residual plus the clean embedding (what they would compute: their receivers all see corrupted inputs).
A circuit without an edge into `logits` gives the corrupted metric without a forward; with a metric that reads only
the last position (`logit_diff`) only that position is unembedded, and every run (the corrupted one and each circuit's)
computes only the positions from the prompts' first difference on, on the shared prefix's keys and values
(minineo.discovery.prefix): the recorded tensors below then cover those positions. Source of the semantics: Hanna et al., COLM 2024
(EAP-IG's `evaluate_graph`); the brute-force oracle is tests/test_discovery_patched.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from minineo import checks

from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.discovery.prefix import SharedPrefix
from minineo.errors import UserError

if TYPE_CHECKING:
    from minineo.forward.model import Model

QKV_SITES = ("q_input", "k_input", "v_input")


def run_metric(metric: Metric, logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """metric(logits, pairs), checked to give one value per pair: (n,)."""
    values = metric(logits, pairs)
    if not isinstance(values, torch.Tensor) or values.shape != (len(pairs),):
        shape = f"shape {tuple(values.shape)}" if isinstance(values, torch.Tensor) else checks.describe(values)
        raise UserError(f"the metric returned {shape}, but it must give one value per pair, a tensor of shape "
                        f"({len(pairs)},) (e.g. logit_diff; not their mean: the caller takes the mean)")
    if not values.is_floating_point():
        raise UserError(f"the metric returned a {values.dtype} tensor; it must give real numbers (a float tensor of "
                        f"shape ({len(pairs)},)), e.g. a logit difference")
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise UserError(f"the metric returned {float(values[first].detach())} for pair {first} ({int(bad.sum())} of "
                        f"{len(pairs)} not finite); a metric must give a finite number per pair")
    return values


def reads_last_position(metric: Metric, batch: Pairs, d_vocab: int) -> bool:
    """Whether metric(logits) == metric(logits[:, -1:]): then only the last position needs unembedding. logit_diff
    reads only it (by definition); any other metric is probed on random logits of the batch's shape."""
    if metric is logit_diff:
        return True
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*batch.clean.shape, d_vocab, generator=g).to(batch.clean.device)  # (n, pos, d_vocab)
    try:
        last, full = metric(logits[:, -1:], batch), metric(logits, batch)
    except Exception:  # the metric reads other positions
        return False
    return isinstance(last, torch.Tensor) and isinstance(full, torch.Tensor) and last.shape == full.shape \
        and bool(torch.equal(last, full))


@dataclass
class Plan:
    """Which receivers of one circuit are full (every real edge in), empty (none) or mixed, (n_receivers,) bool each;
    `edges` (n_senders, n_receivers) the circuit's real in-circuit edges; `senders` the senders feeding a mixed
    receiver, in order (their differences are stored, sender senders[i] in row i); `rows` (n_senders + 1,) how many
    of them come before each sender index; `start` the first layer with an edge into it."""

    edges: torch.Tensor
    full: torch.Tensor
    empty: torch.Tensor
    mixed: torch.Tensor
    senders: torch.Tensor
    rows: list[int]
    start: int

    @classmethod
    def of(cls, graph: Graph, in_graph: torch.Tensor) -> Plan:
        real = graph.real_edges
        edges = in_graph.to(torch.bool).cpu() & real  # (n_senders, n_receivers)
        count = edges.sum(0)
        full, empty = count == real.sum(0), count == 0
        mixed = ~(full | empty)
        needed = edges[:, mixed].any(1)  # (n_senders,)
        rows = [0] + torch.cumsum(needed, 0).tolist()
        per_layer = (graph.n_receivers - 1) // graph.n_layers  # receivers of a layer: 3H + 1, in order; then logits
        live = (~empty[:-1]).view(graph.n_layers, per_layer).any(1)
        start = int(live.nonzero()[0]) if bool(live.any()) else graph.n_layers - 1
        return cls(edges, full, empty, mixed, needed.nonzero().flatten(), rows, start)

    @property
    def is_full(self) -> bool:
        return bool(self.full.all())

    def stored(self, first: int, stop: int) -> slice:
        """The rows of the difference buffer holding senders first..stop-1 (those of them that are stored)."""
        return slice(self.rows[first], self.rows[stop])

    def columns(self, first: int, stop: int, receivers: list[int]) -> torch.Tensor:
        """The edges from the stored senders among first..stop-1 to `receivers`: (stored, len(receivers)) bool."""
        return self.edges[self.senders[self.stored(first, stop)]][:, receivers]


class Recording:
    """One batch's corrupted run and clean embedding, for the runs of any number of circuits (module docstring).

    Per layer: `resid_pre`, `mlp_in` (batch, pos, d_model) and `z` (batch, pos, head, d_head) of the corrupted run;
    `mlp_out` (batch, pos, d_model); `resid_post` the last block's; `clean_resid` the clean run's blocks.0.resid_pre;
    `embed_difference` (batch, pos, d_model) clean - corrupted token embedding; `difference` (n_senders, batch, pos,
    d_model) the buffer a run stores its senders' differences in (Plan.senders order); `corrupted_values` (n,) the metric of the corrupted run. The corrupted run is made on first need (a full circuit
    needs none of it)."""

    def __init__(self, model: Model, graph: Graph, batch: Pairs, metric: Metric):
        self.model, self.graph, self.batch, self.metric = model, graph, batch, metric
        self.mask = batch.attention_mask
        self.last_only = reads_last_position(metric, batch, model.config.d_vocab)
        # with a metric of the last position, runs compute the positions from the prompts' first difference on
        self.prefix = SharedPrefix.of(model, batch, enabled=self.last_only)
        embeds: list[torch.Tensor] = []
        self.clean_resid = self._embed(batch.clean, embeds)  # (batch, pos, d_model)
        self.clean_embed = embeds[0]
        self._recorded = False

    def _embed(self, tokens: torch.Tensor, out: list[torch.Tensor]) -> torch.Tensor:
        """blocks.0.resid_pre of `tokens` (batch, pos - prefix length, d_model); the token embedding is appended to
        `out`."""
        def keep(x: torch.Tensor) -> torch.Tensor:
            out.append(x)
            return x
        return self.prefix.embed(self.model, tokens, {"embed": keep})

    def logits_at(self, rows: int) -> torch.Tensor | None:
        """The (rows, pos - prefix length) bool mask of the positions to unembed, or None for all of them."""
        return self.prefix.last_position(rows) if self.last_only else None

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        """The metric per pair (n,) of logits (n, pos, d_vocab), or (n, d_vocab) of the last position."""
        return run_metric(self.metric, logits[:, None] if self.last_only else logits, self.batch)

    def record(self) -> None:
        """The corrupted forward, once: every site the runs read (no-op when done)."""
        if self._recorded:
            return
        L, model = self.graph.n_layers, self.model
        embeds: list[torch.Tensor] = []
        resid = self._embed(self.batch.corrupted, embeds)
        store: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            def fn(x: torch.Tensor) -> torch.Tensor:
                store[name] = x.detach()  # records: no later op writes into these tensors
                return x
            return fn

        names = [f"blocks.{l}.{site}" for l in range(L) for site in ("resid_pre", "mlp_in", "attn.z", "mlp_out")]
        patch = {name: keep(name) for name in names + [f"blocks.{L - 1}.resid_post"]}
        logits = model.run_from(0, resid, patch=patch, attention_mask=self.mask, kv=self.prefix.cache(),
                                logits_at=self.logits_at(len(self.batch)))
        self.corrupted_values = self.values(logits)
        self.resid_pre = [store[f"blocks.{l}.resid_pre"] for l in range(L)]
        self.mlp_in = [store[f"blocks.{l}.mlp_in"] for l in range(L)]
        self.z = [store[f"blocks.{l}.attn.z"] for l in range(L)]
        self.mlp_out = [store[f"blocks.{l}.mlp_out"] for l in range(L)]
        self.resid_post = store[f"blocks.{L - 1}.resid_post"]
        H = self.graph.n_heads
        # every head input of a layer with no edge in: one expanded view, shared by q, k and v (ln1 runs once)
        self.resid_pre_per_head = [x[:, :, None].expand(-1, -1, H, -1) for x in self.resid_pre]
        self.embed_difference = self.clean_embed - embeds[0]
        self.difference = torch.empty(self.graph.n_senders, *resid.shape, dtype=resid.dtype, device=resid.device)
        self._recorded = True

    @torch.no_grad()
    def run(self, in_graph: torch.Tensor) -> torch.Tensor:
        """The metric per pair (n,) of the clean prompts run through the circuit `in_graph` (n_senders, n_receivers)
        bool (edges that are not real edges of the graph are ignored)."""
        plan = Plan.of(self.graph, in_graph)
        if not plan.is_full:
            self.record()
            if bool(plan.empty[self.graph.logits_index]):
                return self.corrupted_values.clone()  # the logits read only corrupted inputs
        g, L = self.graph, self.graph.n_layers
        if plan.rows[1]:  # the input node is stored: its difference is the same in every run
            self.difference[0] = self.embed_difference
        if plan.start == 0:
            x = self.clean_resid
        else:  # layers before start compute their corrupted outputs: only the embedding differs so far
            x = self.resid_pre[plan.start] + self.embed_difference
            self.difference[plan.stored(1, g.senders_before(g.receiver_index(plan.start, 0, "q")))].zero_()
        for layer in range(plan.start, L):
            last = layer == L - 1
            patch = {} if plan.is_full else _LayerPatches(self, plan, layer).patches(x)
            x = self.model.run_from(layer, x, patch=patch, attention_mask=self.mask,
                                    kv=self.prefix.cache(range(layer, layer + 1)),
                                    stop_at_layer=None if last else layer + 1,
                                    logits_at=self.logits_at(len(self.batch)) if last else None)
        return self.values(x)


class _LayerPatches:
    """The patches of one layer of one circuit's run: receiver inputs (tensors, or functions for the MLP and logits,
    which also read this layer's heads) and the taps storing the needed senders' differences."""

    def __init__(self, rec: Recording, plan: Plan, layer: int):
        self.rec, self.plan, self.layer = rec, plan, layer
        g = rec.graph
        self.base = g.receiver_index(layer, 0, "q")
        self.n = g.senders_before(self.base)  # senders of earlier layers
        self.heads = slice(g.sender_index(layer, 0), g.sender_index(layer, 0) + g.n_heads)
        self.mlp_sender = g.sender_index(layer)
        receivers = list(range(self.base, self.base + 3 * g.n_heads + 1))
        if layer == g.n_layers - 1:
            receivers.append(g.logits_index)
        self.mixed = [r for r in receivers if bool(plan.mixed[r])]
        self.partial: dict[int, torch.Tensor] = {}

    def _sum(self, first: int, stop: int, receivers: list[int]) -> torch.Tensor:
        """sum over the stored senders s in first..stop-1 of edge(s, r) * difference[s] for r in receivers: one
        (receivers, stored) @ (stored, batch * pos * d_model) product; (len(receivers), batch, pos, d_model)."""
        d, rows = self.rec.difference, self.plan.stored(first, stop)
        columns = self.plan.columns(first, stop, receivers).to(device=d.device, dtype=d.dtype)  # (stored, receivers)
        flat = d[rows].flatten(1)  # (stored, batch * pos * d_model), a view
        return (columns.T @ flat).view(len(receivers), *d.shape[1:])

    def _earlier_sums(self) -> None:
        """partial[r] (batch, pos, d_model): the sum over senders of earlier layers for every mixed receiver r of the
        layer, all in one product."""
        if self.mixed:
            summed = self._sum(0, self.n, self.mixed)  # (mixed, batch, pos, d_model)
            self.partial = dict(zip(self.mixed, summed))

    def patches(self, x: torch.Tensor) -> dict[str, torch.Tensor | Callable[[torch.Tensor], torch.Tensor]]:
        """This layer's patches for the run whose blocks.{layer}.resid_pre is x (batch, pos, d_model)."""
        rec, plan, layer, g = self.rec, self.plan, self.layer, self.rec.graph
        self._earlier_sums()
        p = f"blocks.{layer}."
        patches: dict[str, torch.Tensor | Callable[[torch.Tensor], torch.Tensor]] = {}
        H = g.n_heads
        for i, site in enumerate(QKV_SITES):
            rows = range(self.base + i * H, self.base + (i + 1) * H)
            if all(bool(plan.full[r]) for r in rows):
                continue  # every head keeps this run's input
            patches[p + site] = self._head_inputs(x, rows)
        mlp = g.receiver_index(layer)
        if not bool(plan.full[mlp]):
            patches[p + "mlp_in"] = rec.mlp_in[layer] if bool(plan.empty[mlp]) else self._rebuild(mlp, rec.mlp_in[layer])
        if layer == g.n_layers - 1 and not bool(plan.full[g.logits_index]):  # empty logits never get here
            patches[p + "resid_post"] = self._rebuild(g.logits_index, rec.resid_post)
        if plan.rows[self.heads.stop] > plan.rows[self.heads.start]:
            patches[p + "attn.z"] = self._tap_heads
        if plan.rows[self.mlp_sender + 1] > plan.rows[self.mlp_sender]:
            patches[p + "mlp_out"] = self._tap_mlp
        return patches

    def _head_inputs(self, x: torch.Tensor, rows: range) -> torch.Tensor:
        """One site's per-head inputs (batch, pos, head, d_model): this run's x for full heads, the corrupted
        resid_pre for empty ones, corrupted + partial sum for mixed ones."""
        rec, plan = self.rec, self.plan
        corrupted = rec.resid_pre[self.layer]  # (batch, pos, d_model)
        if all(bool(plan.empty[r]) for r in rows):
            return rec.resid_pre_per_head[self.layer]  # the shared view: ln1 normalises it once
        out = torch.empty(*corrupted.shape[:2], len(rows), corrupted.shape[2], dtype=x.dtype, device=x.device)
        for h, r in enumerate(rows):  # (batch, pos, head, d_model), each head written once
            if bool(plan.mixed[r]):
                torch.add(corrupted, self.partial[r], out=out[:, :, h])
            else:
                out[:, :, h] = x if bool(plan.full[r]) else corrupted
        return out

    def _rebuild(self, r: int, corrupted: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A patch function for receiver r (the MLP or the logits): corrupted + partial + this layer's senders."""
        stop = self.rec.graph.senders_before(r)  # after this layer's heads (and, for the logits, its MLP)

        def fn(_: torch.Tensor) -> torch.Tensor:
            return corrupted + self.partial[r] + self._sum(self.n, stop, [r])[0]
        return fn

    def _tap_heads(self, z: torch.Tensor) -> torch.Tensor:
        """Store each head's difference (z - z_corrupted)[h] @ W_O[h] into difference[heads]; z (batch, pos, head,
        d_head) is returned unchanged."""
        batch, pos, H, d_head = z.shape
        rows = self.plan.stored(self.heads.start, self.heads.stop)
        heads = self.plan.senders[rows] - self.heads.start  # the stored heads of this layer (k,)
        W_O = self.rec.model.blocks[self.layer].attn.W_O  # (head, d_head, d_model)
        dz = z - self.rec.z[self.layer]  # (batch, pos, head, d_head)
        if len(heads) < H:
            dz, W_O = dz[:, :, heads.to(z.device)], W_O[heads.to(z.device)]
        dz = dz.reshape(batch * pos, len(heads), d_head).transpose(0, 1)  # (k, batch * pos, d_head)
        torch.bmm(dz, W_O, out=self.rec.difference[rows].view(len(heads), batch * pos, W_O.shape[-1]))  # (k, batch * pos, d_model)
        return z

    def _tap_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """Store the MLP's difference (batch, pos, d_model); x is returned unchanged."""
        torch.sub(x, self.rec.mlp_out[self.layer], out=self.rec.difference[self.plan.rows[self.mlp_sender]])
        return x
