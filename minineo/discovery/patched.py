"""The exact edge-patched forward: a circuit's metric, one forward per circuit (EAP-IG's `evaluate_graph` semantics).

In a patched run every receiver's input (a head's q, k or v input `blocks.L.q_input` / `k_input` / `v_input`, an MLP's
`blocks.L.mlp_in`, the logits' last `resid_post`) is rebuilt as

    its corrupted-run input + sum over the circuit's edges (s -> r) of (s's output in this run - s's corrupted output)

so an edge outside the circuit carries the sender's corrupted-run output and an edge inside it carries what the sender
computes in this run (Hanna et al., COLM 2024, section 2; the graph of minineo.discovery.graph). Senders' outputs:
`input` = the token embedding (`embed`), head (L, h) = z[:, :, h] @ W_O[h] from `blocks.L.attn.z` (without b_O, the
same in both runs), MLP L = `blocks.L.mlp_out`. Everything the clean and corrupted runs share (position embeddings,
b_O) is inside the corrupted input already, so with every edge in the circuit the rebuilt inputs are the clean run's
and with none they are the corrupted run's.

Nothing here re-implements the forward pass: the corrupted run records sender outputs and receiver inputs through
`patch=` functions that return their value unchanged, and the patched clean run is `model(tokens, patch=...)` whose
patch functions read this run's sender outputs as they are produced (closures over one (batch, pos, n_senders,
d_model) difference buffer, senders first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from minineo import checks
from minineo.discovery.files import check_same_model
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.errors import UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.forward.model import Model

QKV_SITES = ("q_input", "k_input", "v_input")


def check_graph(model: Model, graph: Graph, what: str = "circuit") -> None:
    """UserError unless `model` is a minineo Model and `graph` a Graph of its shape (n_layers, n_heads)."""
    from minineo.forward.model import Model

    if not isinstance(model, Model):
        raise WrongTypeError(f"model must be a minineo Model (minineo.load(...)), got {type(model).__name__}")
    if not isinstance(graph, Graph):
        raise WrongTypeError(f"{what} must be a minineo.discovery.Graph (e.g. Graph.from_model(model)), "
                             f"got {type(graph).__name__}")
    cfg = model.config
    if (graph.n_layers, graph.n_heads) != (cfg.n_layers, cfg.n_heads):
        raise UserError(f"{what} is a graph of a {graph.n_layers}-layer, {graph.n_heads}-head model but the model has "
                        f"{cfg.n_layers} layers and {cfg.n_heads} heads; build it with Graph.from_model(model)")
    check_same_model(graph, Graph.from_model(model), what)  # one shape, but made for another model: refused


def check_pairs(pairs: Pairs, metric: Callable, batch_size: int | None) -> None:
    """UserError for pairs that are not Pairs, a metric that is not callable, or a batch size that is not a positive int."""
    if not isinstance(pairs, Pairs):
        raise WrongTypeError(f"pairs must be minineo.discovery.Pairs (Pairs.from_text or Pairs.from_jsonl), "
                             f"got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise UserError("pairs holds no pairs; give at least one clean/corrupted pair")
    if not callable(metric):
        raise WrongTypeError(f"metric must be a function (logits (n, pos, d_vocab), pairs) -> (n,), got "
                             f"{type(metric).__name__}; the default is minineo.discovery.logit_diff")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size={batch_size!r} must be a positive int (pairs per forward pass) or None for all "
                        f"{len(pairs)} pairs at once")


def run_metric(metric: Metric, logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """metric(logits, pairs), checked to give one value per pair: (n,)."""
    values = metric(logits, pairs)
    if not isinstance(values, torch.Tensor) or values.shape != (len(pairs),):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise UserError(f"the metric returned {shape}, but it must give one value per pair, shape ({len(pairs)},) "
                        "(e.g. logit_diff; a batch mean is taken by the caller)")
    return values


class SenderTaps:
    """Patch functions that store every sender's output (n_senders, batch, pos, d_model) as the forward produces it.

    `out[s]` holds sender s's output; with `base` given, `out[s]` is (this run's output - base[s]). A forward writes
    every sender, so `out` may start empty. Senders lead the
    layout so that a receiver's sum over senders is one matrix product, with no copy of the buffer.
    The functions return the site's value unchanged.
    """

    def __init__(self, model: Model, graph: Graph, out: torch.Tensor, base: torch.Tensor | None = None):
        self.model, self.graph, self.out, self.base = model, graph, out, base

    def _store(self, index: int | slice, value: torch.Tensor) -> None:
        value = value.detach()  # a record: never part of a gradient run's graph
        self.out[index] = value if self.base is None else value - self.base[index]

    def patches(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        g, patches = self.graph, {}

        def tap_input(x: torch.Tensor) -> torch.Tensor:  # (batch, pos, d_model)
            self._store(0, x)
            return x

        patches["embed"] = tap_input
        for layer, block in enumerate(self.model.blocks):
            heads = slice(g.sender_index(layer, 0), g.sender_index(layer, 0) + g.n_heads)

            def tap_heads(z: torch.Tensor, heads=heads, W_O=block.attn.W_O) -> torch.Tensor:
                # z (batch, pos, head, d_head) -> each head's own write (head, batch, pos, d_model), without b_O
                self._store(heads, torch.einsum("bphe,hed->hbpd", z, W_O))
                return z

            def tap_mlp(x: torch.Tensor, index=g.sender_index(layer)) -> torch.Tensor:  # (batch, pos, d_model)
                self._store(index, x)
                return x

            patches[f"blocks.{layer}.attn.z"] = tap_heads
            patches[f"blocks.{layer}.mlp_out"] = tap_mlp
        return patches


def receiver_sites(n_layers: int) -> list[str]:
    """The sites holding the receivers' inputs: per layer resid_pre (every head's q/k/v input is a copy of it) and
    mlp_in, then the last resid_post (the logits' input)."""
    names = []
    for layer in range(n_layers):
        names += [f"blocks.{layer}.resid_pre", f"blocks.{layer}.mlp_in"]
    return names + [f"blocks.{n_layers - 1}.resid_post"]


def record_corrupted(
    model: Model, graph: Graph, tokens: torch.Tensor, attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward on `tokens` (the corrupted prompts), stopped before ln_final (nothing unembedded): (sender outputs
    (n_senders, batch, pos, d_model), {receiver site: its input (batch, pos, d_model)} for `receiver_sites`)."""
    batch, pos = tokens.shape
    outputs = torch.empty(graph.n_senders, batch, pos, model.config.d_model, dtype=model.W_E.dtype, device=model.W_E.device)
    patch = SenderTaps(model, graph, outputs).patches()
    inputs: dict[str, torch.Tensor] = {}
    for name in receiver_sites(graph.n_layers):
        def keep(x: torch.Tensor, name=name) -> torch.Tensor:
            inputs[name] = x.detach().clone()
            return x
        patch[name] = keep
    model(tokens, attention_mask=attention_mask, patch=patch, stop_at_layer=graph.n_layers)
    return outputs, inputs


def receiver_patches(
    graph: Graph, edges: torch.Tensor, difference: torch.Tensor, corrupted_inputs: dict[str, torch.Tensor],
) -> dict[str, Callable[[torch.Tensor], torch.Tensor] | torch.Tensor]:
    """Patches that rebuild every receiver's input from `corrupted_inputs` plus the in-circuit senders' differences.

    `edges` (n_senders, n_receivers) in the difference buffer's dtype (1 = in the circuit); `difference` (n_senders,
    batch, pos, d_model), filled by SenderTaps during the same run. A receiver with every edge in keeps this run's value
    (the rebuilt input equals it up to round-off); one with none gets its corrupted input as a tensor."""
    g, H, L = graph, graph.n_heads, graph.n_layers
    patches: dict[str, Callable[[torch.Tensor], torch.Tensor] | torch.Tensor] = {}
    real = g.real_edges.to(edges.device)

    def rebuild(corrupted: torch.Tensor, n: int, columns: torch.Tensor, per_head: bool):
        # corrupted (batch, pos, d_model); columns (n, head) or (n,): which of the first n senders feed the receiver(s)
        def fn(_: torch.Tensor) -> torch.Tensor:
            flat = difference[:n].reshape(n, -1)  # (n, batch * pos * d_model), a view
            if per_head:  # (head, batch * pos * d_model) -> (batch, pos, head, d_model)
                summed = (columns.T @ flat).view(-1, *corrupted.shape).permute(1, 2, 0, 3)
                return corrupted[:, :, None] + summed
            return corrupted + (columns @ flat).view(corrupted.shape)
        return fn

    for layer in range(L):
        base = g.receiver_index(layer, 0, "q")
        n = g.senders_before(base)
        for x, site in enumerate(QKV_SITES):
            cols = slice(base + x * H, base + (x + 1) * H)
            columns, wanted = edges[:n, cols], real[:n, cols]
            name = f"blocks.{layer}.{site}"
            if bool((columns.bool() | ~wanted).all()):
                continue  # every edge in: this run's input
            corrupted = corrupted_inputs[f"blocks.{layer}.resid_pre"]
            if not bool(columns.any()):
                patches[name] = corrupted[:, :, None].expand(-1, -1, H, -1).contiguous()
            else:
                patches[name] = rebuild(corrupted, n, columns, per_head=True)
        single = [(g.receiver_index(layer), f"blocks.{layer}.mlp_in")]
        if layer == L - 1:
            single.append((g.logits_index, f"blocks.{L - 1}.resid_post"))
        for r, name in single:
            n = g.senders_before(r)
            columns, wanted = edges[:n, r], real[:n, r]
            if bool((columns.bool() | ~wanted).all()):
                continue  # every edge in: this run's input
            corrupted = corrupted_inputs[name]
            patches[name] = corrupted.clone() if not bool(columns.any()) else rebuild(corrupted, n, columns, False)
    return patches


@torch.no_grad()
@checks.typed
def evaluate(
    model: Model, circuit: Graph | Sequence[Graph], pairs: Pairs, metric: Metric = logit_diff, *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The metric of the clean prompts run through `circuit`: (n,) float32 on the CPU, one value per pair.

    Every edge with `circuit.in_graph[s, r]` carries sender s's output in this run; every other edge carries its
    corrupted-run output (EAP-IG's `evaluate_graph` with intervention="patching"; see the module docstring). All
    edges in gives the clean metric, none the corrupted one. Node circuits are edge circuits: a node out is every edge
    from it out. Nodes on no path from `input` to `logits` need no pruning first: an edge from a node that sees only
    corrupted inputs carries its corrupted output anyway. Per batch: one corrupted forward, one patched clean forward
    per circuit; a list of circuits (e.g. a faithfulness curve's) shares the corrupted forward and gives
    (n_circuits, n).

    pairs: Pairs (left-padded; GPT-Neo's local windows and padded batches run as in `model(...)`); metric(logits (n,
    pos, d_vocab), pairs) -> (n,); batch_size: pairs per forward (None: all at once).
    Raises UserError (WrongTypeError) for a graph of another shape, pairs or metric of the wrong type, a bad batch size.
    """
    single = isinstance(circuit, Graph)
    circuits = [circuit] if single else list(circuit) if isinstance(circuit, (list, tuple)) else [circuit]
    if not circuits:
        raise UserError("evaluate got an empty list of circuits; give a Graph or a non-empty list of them")
    for c in circuits:
        check_graph(model, c)
    check_pairs(pairs, metric, batch_size)
    device, dtype = model.W_E.device, model.W_E.dtype
    edges = [(c.in_graph & c.real_edges).to(device=device, dtype=dtype) for c in circuits]  # (n_senders, n_receivers)
    values: list[list[torch.Tensor]] = [[] for _ in circuits]
    for batch in pairs.batches(batch_size or len(pairs)):
        batch = batch.to(device)
        corrupted_out, corrupted_in = record_corrupted(model, circuits[0], batch.corrupted, batch.attention_mask)
        for c, e, out in zip(circuits, edges, values):
            difference = torch.empty_like(corrupted_out)  # (n_senders, batch, pos, d_model)
            patch = SenderTaps(model, c, difference, base=corrupted_out).patches()
            patch.update(receiver_patches(c, e, difference, corrupted_in))
            logits = model(batch.clean, attention_mask=batch.attention_mask, patch=patch)  # (batch, pos, d_vocab)
            out.append(run_metric(metric, logits, batch).float().cpu())
    result = torch.stack([torch.cat(v) for v in values])  # (n_circuits, n)
    return result[0] if single else result
