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
`patch=` functions that return their value unchanged, and the patched clean run is the model's own blocks, run layer
by layer (`Model.run_from`) with the receivers' inputs as patches (minineo.discovery.engine, which says what it
skips). `SenderTaps` and `record_corrupted` are the pieces the attribution methods share.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from minineo import checks
from minineo.discovery.files import check_same_model
from minineo.discovery.engine import Recording, run_metric  # noqa: F401 (run_metric: imported from here too)
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.errors import UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.forward.model import Model



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


def check_pairs(pairs: Pairs, metric: Callable, batch_size: int | None, model: Model | None = None) -> None:
    """UserError for pairs that are not Pairs, a metric that is not callable, a metric made for another model than
    `model` (kl_metric keeps its model as `metric.model`), or a batch size that is not a positive int."""
    made_for = getattr(metric, "model", None)
    if model is not None and made_for is not None and made_for is not model:
        raise UserError(f"the metric was made for {made_for.identity()} (kl_metric(model) compares with that model's "
                        f"clean run), but it scores {model.identity()}; make it with kl_metric(this model)")
    if not isinstance(pairs, Pairs):
        raise WrongTypeError(f"pairs must be minineo.discovery.Pairs (Pairs.from_text or Pairs.from_jsonl), "
                             f"got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise UserError("pairs holds no pairs; give at least one clean/corrupted pair")
    check_metric(metric)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size={batch_size!r} must be a positive int (pairs per forward pass) or None for all "
                        f"{len(pairs)} pairs at once")


METRIC_FORM = "metric(logits (n, pos, d_vocab), pairs) -> one value per pair, a tensor of shape (n,)"


def check_metric(metric: Callable) -> None:
    """UserError unless `metric` is a function that can be called as metric(logits, pairs) (checked by its signature
    where Python gives one; what it returns is checked on every call, by engine.run_metric)."""
    if not callable(metric):
        raise WrongTypeError(f"metric must be a function, {METRIC_FORM}; got {checks.describe(metric)}; the default "
                             "is minineo.discovery.logit_diff")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):  # a builtin without a signature: its first call says
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(metric, "__name__", type(metric).__name__)
        raise UserError(f"metric {name}{signature} cannot be called as metric(logits, pairs): a metric must take the "
                        f"logits and the Pairs, {METRIC_FORM} (e.g. lambda logits, pairs: logit_diff(logits, pairs))") \
            from None


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
    corrupted inputs carries its corrupted output anyway. Per batch: one corrupted forward (none when every circuit is full),
    one patched clean run per circuit; a list of circuits (e.g. a faithfulness curve's) shares the corrupted forward
    and gives (n_circuits, n).

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
    check_pairs(pairs, metric, batch_size, model)
    device = model.W_E.device
    values: list[list[torch.Tensor]] = [[] for _ in circuits]
    for batch in pairs.batches(batch_size or len(pairs)):
        recording = Recording(model, circuits[0], batch.to(device), metric)  # the corrupted run: once per batch
        for c, out in zip(circuits, values):
            out.append(recording.run(c.in_graph).float().cpu())
    result = torch.stack([torch.cat(v) for v in values])  # (n_circuits, n)
    return result[0] if single else result
