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
Their engine (one gradient run, ln1's backward in closed form per head, the contraction) is minineo.discovery.gradients;
with a metric of the last position, every run of a batch (gradient methods and exact) computes only the positions from
the prompts' first difference on (minineo.discovery.prefix).
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
from minineo import report
from minineo.discovery.exact import exact_groups, exact_method, reads_last_position
from minineo.discovery.gradients import EdgeSums, NodeTaps, RunGrads, gradient_run, node_run
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, check_prompts_differ, logit_diff
from minineo.discovery.patched import check_graph, check_pairs
from minineo.discovery.prefix import SharedPrefix
from minineo.errors import UserError

if TYPE_CHECKING:
    from minineo.forward.model import Model

METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact")
GRADIENT_METHODS = METHODS[:4]


# ---- the gradient methods ----------------------------------------------------------------------------------

def gradient_method(model: Model, graph: Graph, batch: Pairs, metric: Metric, method: str, ig_steps: int,
                    per_position: bool, advance: Callable[[float], None]) -> torch.Tensor:
    """One batch's sum over pairs of a gradient method's edge contributions (see the module docstring), float64.

    Runs (minineo.discovery.gradients): "eap" one forward on the corrupted prompts and one gradient run on the clean
    ones; "clean-corrupted" a gradient run on each; "eap-ig-inputs" m gradient runs, the first on the corrupted prompts
    (k = 0: the corrupted embedding with the rest of the clean prompt is the corrupted run), and one forward on the
    clean ones; "eap-ig-activations" one forward on each and (1 + 2 n_layers) m gradient runs."""
    # logit_diff reads logits[:, -1] by definition; another metric is probed (51 MB of random logits at GPT-2's vocab)
    last = metric is logit_diff or reads_last_position(metric, batch, model.config.d_vocab)
    # with a metric of the last position, every run starts where the prompts first differ (minineo.discovery.prefix)
    prefix = SharedPrefix.of(model, batch, enabled=last)

    def run(tokens: torch.Tensor, patch: dict | None = None, nodes: NodeTaps | None = None) -> RunGrads:
        grads = gradient_run(model, graph, tokens, batch, metric, patch, prefix if last else None, nodes)
        advance(1)
        return grads

    def sums(corrupted: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> EdgeSums:
        return EdgeSums(model, graph, corrupted, clean, per_position, prefix.length)

    if method == "eap":
        corrupted, clean = node_run(model, graph, batch.corrupted, prefix), NodeTaps(graph.n_layers)
        grads = run(batch.clean, nodes=clean)
        edges = sums(corrupted, clean.values)
        edges.add(grads)
        return edges.total()
    if method == "clean-corrupted":
        corrupted, clean = NodeTaps(graph.n_layers), NodeTaps(graph.n_layers)
        runs = [run(batch.corrupted, nodes=corrupted), run(batch.clean, nodes=clean)]
        edges = sums(corrupted.values, clean.values)
        for grads in runs:
            edges.add(grads)
        return edges.total() / 2
    if method == "eap-ig-inputs":
        corrupted = NodeTaps(graph.n_layers)
        first = run(batch.corrupted, nodes=corrupted)  # k = 0
        clean = node_run(model, graph, batch.clean, prefix)
        edges = sums(corrupted.values, clean)
        edges.add(first)
        clean_embed, corrupted_embed = clean["embed"], corrupted.values["embed"]  # (batch, pos, d_model)
        for k in range(1, ig_steps):  # k/m of the way from the corrupted to the clean embedding
            edges.add(run(batch.clean, {"embed": corrupted_embed + (k / ig_steps) * (clean_embed - corrupted_embed)}))
        return edges.total() / ig_steps
    # eap-ig-activations: one node at a time (the input, a layer's heads together as z, an MLP), interpolated
    clean, corrupted = node_run(model, graph, batch.clean, prefix), node_run(model, graph, batch.corrupted, prefix)
    edges = sums(corrupted, clean)
    sites = NodeTaps(graph.n_layers).sites
    for site in sites:
        for k in range(1, ig_steps + 1):
            alpha = k / ig_steps
            edges.add(run(batch.clean, {site: alpha * clean[site] + (1 - alpha) * corrupted[site]}))
    return edges.total() / (len(sites) * ig_steps)


# ---- the entry point ---------------------------------------------------------------------------------------

def _shard(pairs: Pairs) -> tuple[Pairs | None, int, int]:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return pairs, rank, world
    index = torch.arange(rank, len(pairs), world)
    return (pairs[index] if len(index) else None), rank, world


MAX_IG_STEPS = 1000  # EAP-IG's papers use 5 to 100; a bound that catches a mistyped count (10**6 ran for minutes)
MANY_IG_STEPS = 100  # beyond the papers' range: the cost is said up front on stderr, terminal or not
LONG_RUN = 5000  # passes of a batch after which the cost is said up front whatever the method


def _work(method: str, graph: Graph, n: int, batch_size: int, ig_steps: int) -> tuple[float, str, float]:
    """(progress total, the cost in a few words for the bar, the cost in passes of a batch): edges for exact, with the
    forward passes they should cost (a variant starting at layer l runs n_layers - l of the n_layers blocks); forward
    and backward passes for the gradient methods."""
    batches = math.ceil(n / batch_size)
    if method == "exact":
        L = graph.n_layers
        cost = sum(graph.senders_before(rs[0]) * len(rs) * (L - layer) / L for layer, _, rs in exact_groups(graph))
        return float(graph.n_edges * batches), f"~{cost * batches:.0f} forward passes", cost * batches
    per_batch = {"eap": 1, "clean-corrupted": 2, "eap-ig-inputs": ig_steps,
                 "eap-ig-activations": (1 + 2 * graph.n_layers) * ig_steps}[method]
    total = float(per_batch * batches)
    return total, f"{total:.0f} passes", total  # each a forward and a backward: the bar counts them


def _say_cost(method: str, n: int, passes: float, ig_steps: int) -> None:
    """A run of many passes says so before it starts (minineo.report: shown outside a terminal too, where the
    progress bar is not)."""
    ig = method.startswith("eap-ig")
    if passes > LONG_RUN or (ig and ig_steps > MANY_IG_STEPS):
        steps = f" with ig_steps={ig_steps}" if ig else ""
        kind = "forward passes" if method == "exact" else "forward and backward passes"
        report.warn(f"{method}{steps} on {n} pairs costs about {passes:,.0f} {kind} of the model over a batch; this "
                    "can take a while" + ("; EAP-IG's default is 5 steps" if ig else ""))


def _check_moving(pairs: Pairs) -> None:
    """UserError when no pair's prompts differ (every score would be 0); a warning with the count when some do not."""
    same, n = check_prompts_differ(pairs, "so every score would be 0 (corrupted - clean = 0)"), len(pairs)
    if same:
        report.warn(f"{same} of {n} pairs have the same clean and corrupted prompts; they add 0 to every score, which "
                    f"is a mean over all {n} pairs (drop them to average over the {n - same} whose prompts differ)")


@checks.typed
def attribute(
    model: Model, graph: Graph, pairs: Pairs, metric: Metric = logit_diff, method: str = "eap", *,
    ig_steps: int = 5, per_position: bool = False, batch_size: int | None = None,
) -> Graph:
    """Fill `graph.scores` (n_senders, n_receivers) with every edge's score by `method`; returns the graph.

    method: "eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted" or "exact" (module docstring; EAP-IG's
    definitions, hannamw/EAP-IG eap/attribute.py). Scores are per-pair means in metric units (noising form: an
    estimate of m(only the edge corrupted) - m(clean)); 0 where a pair of nodes is no edge. ig_steps: the number of
    interpolation steps of the two EAP-IG methods (default 5, at most MAX_IG_STEPS = 1000; past 100, or
    any run of over 5000 passes, the cost is said on stderr through minineo.report before it starts, terminal or not). per_position (gradient methods, prompts of one length,
    no padding): also `graph.position_scores` (pos, n_senders, n_receivers). batch_size: pairs per forward (None: all).
    metric(logits (n, pos, d_vocab), pairs) -> (n,).

    Pairs whose clean and corrupted prompts are the same tokens add exactly 0 to every score (corrupted - clean = 0)
    and still count in the mean: some of them are said in a warning (minineo.report), all of them are a UserError.

    The new scores replace the old, so `graph.extras` (a circuit file's record of the scores it was read with: their
    method, unit and curve) is emptied: a file saved from the graph records none rather than another method's.

    Raises UserError (WrongTypeError) for an unknown method, a bad ig_steps or batch_size, an ig_steps other than
    the default 5 with a method that takes none, per_position with exact or
    with padded prompts, pairs that all have the same clean and corrupted prompts, a graph of another model's shape,
    pairs or metric of the wrong type.
    """
    check_graph(model, graph, "graph")
    check_pairs(pairs, metric, batch_size, model)
    if method not in METHODS:
        raise UserError(f"method={method!r} is not a scoring method; give one of {', '.join(METHODS)}")
    checks.count(ig_steps, "ig_steps", maximum=MAX_IG_STEPS,
                 fix="interpolation steps of eap-ig-inputs / eap-ig-activations; EAP-IG's default is 5")
    if ig_steps != 5 and not method.startswith("eap-ig"):
        raise UserError(f"ig_steps={ig_steps!r} is for eap-ig-inputs and eap-ig-activations, but method is "
                        f"{method!r}, which takes no steps; drop ig_steps, or give an eap-ig method")
    if per_position and method == "exact":
        raise UserError("per_position=True is for the gradient methods (eap, eap-ig-inputs, eap-ig-activations, "
                        "clean-corrupted); exact scores whole edges, so drop per_position or pick a gradient method")
    if per_position and pairs.attention_mask is not None:
        raise UserError("per_position=True needs prompts that share one token length (no padding), so that a position "
                        "means the same token slot in every pair; give pairs of one length")
    _check_moving(pairs)
    mine, rank, world = _shard(pairs)
    device = model.W_E.device
    pos = pairs.clean.shape[1]
    sums = torch.zeros((pos,) * per_position + (graph.n_senders, graph.n_receivers), dtype=torch.float64)
    n = torch.zeros((), dtype=torch.float64)
    if mine is not None:
        size = batch_size or len(mine)
        total, cost, passes = _work(method, graph, len(mine), size, ig_steps)
        what = f"{method}: {len(mine)} pair{'s' * (len(mine) != 1)}, {cost}"  # fits 80 columns with its bar
        if world > 1:
            what += f" (rank {rank}/{world})"
        if rank == 0:
            _say_cost(method, len(mine), passes, ig_steps)
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
