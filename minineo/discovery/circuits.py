"""Choosing a circuit from edge scores, as EAP-IG does it (hannamw/EAP-IG, `Graph.apply_topn` / `apply_greedy` /
`apply_threshold` / `prune`), and node circuits.

Each `apply_*` sets `graph.in_graph` and `graph.nodes_in_graph` in place (starting from the empty circuit) and
returns the graph; each refuses a NaN or infinite score of an edge (graph.check_finite_scores), which no ranking can
place. A circuit's nodes are those with an in-circuit edge out and (but for `input`) an in-circuit edge
in; `prune` then removes, until nothing changes, every node that lacks either and every edge whose sender or receiver
is out, so what is left lies on paths from `input` to `logits` (`logits` is always in).
"""

from __future__ import annotations

import heapq
from typing import Iterable

import torch

from minineo import checks, report
from minineo.discovery.graph import Graph, check_finite_scores
from minineo.errors import UnknownNameError, UserError


def receiver_nodes(graph: Graph) -> torch.Tensor:
    """(n_receivers,) long: the sender index of the node each receiver belongs to (a head's q, k and v inputs all
    map to the head; `logits`, which sends nothing, maps to -1). EAP-IG's `forward_to_backward`, as an index."""
    owner = torch.full((graph.n_receivers,), -1, dtype=torch.long)
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            for x in "qkv":
                owner[graph.receiver_index(layer, head, x)] = graph.sender_index(layer, head)
        owner[graph.receiver_index(layer)] = graph.sender_index(layer)
    return owner


def _nodes_with_edges_in_and_out(graph: Graph, owner: torch.Tensor) -> torch.Tensor:
    """(n_senders,) bool: nodes with an in-circuit edge out and one in (`input` needs none in)."""
    edges = graph.in_graph & graph.real_edges
    outgoing = edges.any(dim=1)  # (n_senders,)
    incoming = torch.zeros(graph.n_senders, dtype=torch.bool)
    fed = edges.any(dim=0)  # (n_receivers,)
    incoming[owner[fed & (owner >= 0)]] = True
    incoming[0] = True
    return outgoing & incoming


@checks.typed
def prune(graph: Graph) -> tuple[int, int]:
    """Remove, until nothing changes, nodes without an in-circuit edge in (but `input`) or out, and the edges of
    removed nodes, so every edge left lies on a path from `input` to `logits`. Sets `nodes_in_graph` from the edges.
    Returns (edges before, edges after).

    EAP-IG's `prune` does the same but stops when the node set equals the one it started from; after its
    `apply_topn`, which sets that set from the same edges, it stops after one pass and can leave dead ends (a top-n
    of random scores on a 12 x 12 graph keeps edges into heads that send nothing). This one runs to the fixed
    point; on EAP-IG's own top-20 file both give its 18 edges."""
    before = graph.n_edges_in_graph
    owner = receiver_nodes(graph)
    graph.in_graph &= graph.real_edges
    while True:
        nodes = _nodes_with_edges_in_and_out(graph, owner)
        graph.nodes_in_graph = nodes
        receiver_in = torch.ones(graph.n_receivers, dtype=torch.bool)  # logits is always in
        receiver_in[owner >= 0] = nodes[owner[owner >= 0]]
        kept = graph.in_graph & nodes[:, None] & receiver_in[None, :]
        if torch.equal(kept, graph.in_graph):
            return before, graph.n_edges_in_graph
        graph.in_graph = kept


_prune = prune  # the apply_* functions take a `prune` flag, as EAP-IG's do


def _ranking_scores(graph: Graph, absolute: bool, what: str) -> torch.Tensor:
    """The scores `what` ranks edges by (|score| when `absolute`), -inf where a pair is no edge; UserError for a
    non-finite score of a real edge (check_finite_scores)."""
    check_finite_scores(graph, what)
    scores = graph.scores.abs() if absolute else graph.scores.clone()
    return scores.masked_fill(~graph.real_edges, -torch.inf)  # (n_senders, n_receivers)


def _check_scored(graph: Graph, what: str) -> None:
    """UserError unless some edge has a nonzero score: a ranking of all-0 scores picks edges arbitrarily."""
    if not bool(graph.scores[graph.real_edges].ne(0).any()):
        raise UserError(f"{what} ranks edges by score, but the graph has no edge scores (all 0), so it would pick "
                        "edges arbitrarily; score it first with minineo.discovery.attribute(model, graph, pairs, "
                        "method=...)")


def _check_count(n: int, graph: Graph, what: str) -> int:
    return checks.count(n, what, minimum=0, maximum=graph.n_edges, fix=f"the graph has {graph.n_edges} edges")


def _finish(graph: Graph, do_prune: bool) -> Graph:
    graph.nodes_in_graph = _nodes_with_edges_in_and_out(graph, receiver_nodes(graph))
    if do_prune:
        _prune(graph)
    return graph


@checks.typed(own=("n",))  # _check_count states the range for a wrong type too
def apply_topn(graph: Graph, n: int, absolute: bool = True, prune: bool = True) -> Graph:
    """The circuit of the `n` highest-scoring edges (by |score| when `absolute`, else by signed score), then pruned
    (EAP-IG's `apply_topn(n, absolute, level='edge', reset=True, prune)`). In place; returns `graph`. A graph with
    no edge scores (all 0) is a UserError for n > 0: its top n would be arbitrary; so is a NaN or infinite score,
    naming the edge."""
    n = _check_count(n, graph, "n (the number of edges)")
    if n:
        _check_scored(graph, "apply_topn")
    order = _ranking_scores(graph, absolute, "apply_topn").flatten().argsort(descending=True, stable=True)
    graph.in_graph = torch.zeros_like(graph.in_graph)
    graph.in_graph.view(-1)[order[:n]] = True
    return _finish(graph, prune)


@checks.typed
def apply_threshold(graph: Graph, threshold: float, absolute: bool = True, prune: bool = True) -> Graph:
    """The circuit of every edge whose score (|score| when `absolute`) is >= `threshold`, then pruned (EAP-IG's
    `apply_threshold`). In place; returns `graph`.

    A threshold that keeps no edge is a UserError saying the largest score (as `minineo discover --threshold`
    says): an empty circuit's faithfulness is 0 by construction, never a finding. An infinite or NaN threshold
    is refused (a negative one keeps every edge), and so is an infinite or NaN score, naming the edge. When the
    threshold keeps edges but pruning removes them all (none lies on a path from input to logits), minineo.report
    warns."""
    _threshold(graph, threshold, absolute, False, "threshold")
    if prune:
        before, after = _prune(graph)
        if not after:
            report.warn(f"apply_threshold: the {before} edges at or above threshold {threshold:g} lie on no path from "
                        "input to logits, so pruning removed them all and the circuit is empty (its faithfulness is "
                        "0 by construction, not a finding); give a smaller threshold")
    return graph


def _threshold(graph: Graph, threshold: float, absolute: bool, prune: bool, name: str) -> Graph:
    """apply_threshold, its messages naming the argument as `name` ('threshold', the CLI's '--threshold')."""
    threshold = checks.number(threshold, name, fix="edges whose score is at least this number are kept")
    ranking = _ranking_scores(graph, absolute, "apply_threshold")
    kept = ranking >= threshold
    if not bool(kept.any()):
        largest = float(ranking.max())
        what = "|score|" if absolute else "score"
        raise UserError(f"{name} {threshold:g} keeps no edge: the largest {what} is {largest:.4g}; give a smaller "
                        f"{name}, or keep the top n edges (apply_topn, --top N)")
    graph.in_graph = kept
    return _finish(graph, prune)


@checks.typed(own=("n",))  # _check_count states the range for a wrong type too
def apply_greedy(graph: Graph, n: int, absolute: bool = True, prune: bool = True) -> Graph:
    """EAP-IG's greedy circuit: grown from `logits` upwards, each step adds the best-scoring edge into a node already
    in the circuit (first only edges into `logits`); a sender joining the circuit makes its own incoming edges
    candidates. `n` edges (fewer if the candidates run out), then pruned. In place; returns `graph`. A graph with
    no edge scores (all 0) or a non-finite score is a UserError, as in apply_topn. When n > 0 edges were asked for
    and pruning leaves none (the n edges grown from `logits` reach no path from `input`), minineo.report warns: the
    empty circuit's faithfulness is 0 by construction."""
    n = _check_count(n, graph, "n (the number of edges)")
    if n:
        _check_scored(graph, "apply_greedy")
    ranking = _ranking_scores(graph, absolute, "apply_greedy")
    owner = receiver_nodes(graph)
    incoming: dict[int, list[int]] = {s: [] for s in range(graph.n_senders)}  # node -> receivers it owns
    for r, s in enumerate(owner.tolist()):
        if s >= 0:
            incoming[s].append(r)
    nodes = torch.zeros(graph.n_senders, dtype=torch.bool)
    graph.in_graph = torch.zeros_like(graph.in_graph)
    heap: list[tuple[float, int, int]] = []  # (-score, sender, receiver): the best first, ties by EAP-IG's index

    def push_edges_into(receivers: list[int]) -> None:
        for r in receivers:
            for s in graph.real_edges[:, r].nonzero().flatten().tolist():
                heapq.heappush(heap, (-float(ranking[s, r]), s, r))

    push_edges_into([graph.logits_index])
    for _ in range(n):
        if not heap:
            break
        _, s, r = heapq.heappop(heap)
        graph.in_graph[s, r] = True
        if not nodes[s]:
            nodes[s] = True
            push_edges_into(incoming[s])
    graph.nodes_in_graph = nodes
    if prune:
        before, after = _prune(graph)
        if n and not after:
            report.warn(f"apply_greedy: the {before} edges grown from logits (n={n}) lie on no path from input to "
                        "logits, so pruning removed them all and the circuit is empty (its faithfulness is 0 by "
                        "construction, not a finding); give a larger n")
    return graph


def node_index(graph: Graph, name: str) -> int:
    """The sender index of node `name` ('input', 'a{L}.h{H}', 'm{L}')."""
    try:
        return graph.sender_names.index(name)
    except ValueError:
        raise UnknownNameError(f"{name!r} is not a node of this {graph.n_layers}-layer, {graph.n_heads}-head graph; "
                               f"nodes are input, a0.h0 .. a{graph.n_layers - 1}.h{graph.n_heads - 1}, m0 .. "
                               f"m{graph.n_layers - 1} (logits is always in)") from None


@checks.typed
def apply_nodes(graph: Graph, nodes: Iterable[str], prune: bool = True) -> Graph:
    """The node circuit of `nodes` (names; `logits` is always in): every edge between two of them is in, every
    edge of a node left out is out (a node out = all its edges out). Then pruned. In place; returns `graph`. A
    name given twice is a UserError (as repeated items are everywhere in minineo), and so is a name that is no node
    (UnknownNameError).

    Name `input` too: every path to `logits` starts there, so without it pruning removes every edge; when the
    circuit returned has no edge although nodes were named, minineo.report warns and says to add it."""
    nodes = checks.distinct(list(nodes), "nodes")
    keep = torch.zeros(graph.n_senders, dtype=torch.bool)
    for name in nodes:
        if name != "logits":
            keep[node_index(graph, name)] = True
    owner = receiver_nodes(graph)
    receiver_in = torch.ones(graph.n_receivers, dtype=torch.bool)
    receiver_in[owner >= 0] = keep[owner[owner >= 0]]
    graph.in_graph = graph.real_edges & keep[:, None] & receiver_in[None, :]
    graph.nodes_in_graph = keep
    if prune:
        _prune(graph)
    if nodes and not graph.n_edges_in_graph:  # input->logits is an edge: only a circuit without input can be empty
        after = " after pruning" if prune else ""
        report.warn(f"apply_nodes: the circuit of the nodes {', '.join(nodes)} has no edge{after}: 'input' is not "
                    "among them, and every path to logits starts at input, so its faithfulness is 0 by "
                    "construction; add 'input' to the nodes")
    return graph


@checks.typed
def circuit_nodes(graph: Graph) -> list[str]:
    """Names of the circuit's nodes (EAP-IG's order; `logits` not listed)."""
    return [name for name, keep in zip(graph.sender_names, graph.nodes_in_graph.tolist()) if keep]


@checks.typed
def circuit_edges(graph: Graph) -> list[str]:
    """Names of the circuit's edges, in EAP-IG's order."""
    return [name for name, s, r in graph.edges() if graph.in_graph[s, r]]
