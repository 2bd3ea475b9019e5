"""Circuit selection against EAP-IG's own top-20 file, and pruning / greedy against brute-force references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minineo.discovery import Graph, circuits, files
from minineo.errors import UnknownNameError, UserError

DATA = Path(__file__).parent / "data" / "eap_ig"


def test_topn_20_on_eap_igs_scores_gives_eap_igs_18_edges_and_7_nodes():
    graph = files.from_json(DATA / "eap-ig-tiny-gpt2-ioi16-eap.json")
    expected = files.from_json(DATA / "eap-ig-tiny-gpt2-ioi16-eap-top20.json")
    circuits.apply_topn(graph, 20, absolute=True, prune=False)
    assert graph.n_edges_in_graph == 20
    assert circuits.prune(graph) == (20, 18)
    assert torch.equal(graph.in_graph, expected.in_graph)
    assert torch.equal(graph.nodes_in_graph, expected.nodes_in_graph)
    assert graph.n_edges_in_graph == 18 and int(graph.nodes_in_graph.sum()) == 7
    again = circuits.apply_topn(files.from_json(DATA / "eap-ig-tiny-gpt2-ioi16-eap.json"), 20)  # prune=True default
    assert torch.equal(again.in_graph, expected.in_graph)


def random_graph(data, max_layers=3, max_heads=3) -> Graph:
    L, H = data.draw(st.integers(1, max_layers)), data.draw(st.integers(1, max_heads))
    graph = Graph(L, H, 4)
    seed = data.draw(st.integers(0, 2**31 - 1))
    scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(seed))
    graph.scores = torch.where(graph.real_edges, scores, torch.zeros(()))
    return graph


def on_paths_brute_force(graph: Graph, edges: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Edges on some input -> logits path, by reachability over node names (independent of EAP-IG's iteration)."""
    def node_of(r: int) -> str:
        name = graph.receiver_names[r]
        return name.split("<")[0]

    named = {(graph.sender_names[s], node_of(r), (s, r)) for s, r in edges}

    def reached(start: str, links: set[tuple[str, str]]) -> set[str]:
        found, changed = {start}, True
        while changed:
            changed = False
            for a, b in links:
                if a in found and b not in found:
                    found.add(b)
                    changed = True
        return found

    forward = reached("input", {(a, b) for a, b, _ in named})
    backward = reached("logits", {(b, a) for a, b, _ in named})
    return {index for a, b, index in named if a in forward and b in backward}


def as_set(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(x) for x in mask.nonzero().tolist()}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_prune_keeps_exactly_the_edges_on_input_to_logits_paths(data):
    graph = random_graph(data)
    p = data.draw(st.floats(0.05, 0.9))
    picked = torch.rand(graph.scores.shape, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 999)))) < p
    graph.in_graph = picked & graph.real_edges
    chosen = as_set(graph.in_graph)
    before, after = circuits.prune(graph)
    assert before == len(chosen)
    assert as_set(graph.in_graph) == on_paths_brute_force(graph, chosen)
    assert after == graph.n_edges_in_graph
    kept_nodes = {graph.sender_names[s] for s, _ in as_set(graph.in_graph)}
    assert set(circuits.circuit_nodes(graph)) == kept_nodes  # every kept node sends a kept edge, and no other node


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300))
def test_topn_then_prune_leaves_only_edges_on_paths_on_a_gpt2_small_graph(seed, n):
    # EAP-IG's own prune stops after one pass after its apply_topn: dead ends stay (see circuits.prune)
    graph = Graph(12, 12, 768)
    scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(seed)) ** 3
    graph.scores = torch.where(graph.real_edges, scores, torch.zeros(()))
    circuits.apply_topn(graph, n, prune=False)
    chosen = as_set(graph.in_graph)
    circuits.prune(graph)
    assert as_set(graph.in_graph) == on_paths_brute_force(graph, chosen)


def greedy_brute_force(graph: Graph, n: int, absolute: bool) -> set[tuple[int, int]]:
    """Each step scans every edge for the best one into a node already in (logits from the start)."""
    key = graph.scores.abs() if absolute else graph.scores
    names = graph.sender_names
    inside, chosen = {"logits"}, set()
    real = as_set(graph.real_edges)
    for _ in range(n):
        frontier = [(float(key[s, r]), (s, r)) for s, r in real - chosen
                    if graph.receiver_names[r].split("<")[0] in inside]
        if not frontier:
            break
        _, (s, r) = max(frontier)
        chosen.add((s, r))
        inside.add(names[s])
    return chosen


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_greedy_grows_from_the_logits_by_the_best_frontier_edge(data):
    graph = random_graph(data)
    absolute = data.draw(st.booleans())
    n = data.draw(st.integers(0, graph.n_edges))
    circuits.apply_greedy(graph, n, absolute=absolute, prune=False)
    assert as_set(graph.in_graph) == greedy_brute_force(graph, n, absolute)
    assert graph.n_edges_in_graph == n


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_topn_and_threshold_select_by_score_before_pruning(data):
    graph = random_graph(data)
    absolute = data.draw(st.booleans())
    n = data.draw(st.integers(0, graph.n_edges))
    key = graph.scores.abs() if absolute else graph.scores
    values = sorted((float(key[s, r]) for s, r in as_set(graph.real_edges)), reverse=True)
    circuits.apply_topn(graph, n, absolute=absolute, prune=False)
    kept = [float(key[s, r]) for s, r in as_set(graph.in_graph)]
    assert sorted(kept, reverse=True) == values[:n]
    threshold = data.draw(st.floats(-2, 2))
    expected = {(s, r) for s, r in as_set(graph.real_edges) if key[s, r] >= threshold}
    if not expected:  # an empty circuit is said, not returned (as `discover --threshold` says it)
        with pytest.raises(UserError, match=r"threshold .* keeps no edge: the largest"):
            circuits.apply_threshold(graph, threshold, absolute=absolute, prune=False)
        return
    circuits.apply_threshold(graph, threshold, absolute=absolute, prune=False)
    assert as_set(graph.in_graph) == expected


@pytest.mark.parametrize("threshold", [float("inf"), float("-inf"), float("nan"), 1e9])
def test_a_threshold_that_keeps_no_edge_or_is_no_finite_number_is_refused_naming_it(threshold):
    graph = Graph(1, 1, 4)
    graph.scores = torch.linspace(-1, 1, graph.scores.numel()).view_as(graph.scores)
    with pytest.raises(UserError, match=r"^threshold ") as caught:
        circuits.apply_threshold(graph, threshold)
    largest = float((graph.scores.abs() * graph.real_edges).max())
    assert ("finite number" in str(caught.value)) == (threshold != 1e9)
    if threshold == 1e9:
        assert f"the largest |score| is {largest:.4g}" in str(caught.value)


def test_a_node_circuit_has_every_edge_among_its_nodes_and_none_of_a_node_left_out():
    graph = Graph(2, 2, 4)
    circuits.apply_nodes(graph, ["input", "a0.h1", "m0", "a1.h0", "m1"], prune=False)
    for name, s, r in graph.edges():
        sender, receiver = name.split("->")
        inside = {"input", "a0.h1", "m0", "a1.h0", "m1", "logits"}
        assert bool(graph.in_graph[s, r]) == (sender in inside and receiver.split("<")[0] in inside), name
    # a node out = all its edges out
    circuits.apply_nodes(graph, ["input", "a0.h1", "m0", "m1"], prune=False)
    assert not any("a1.h0" in name for name in circuits.circuit_edges(graph))
    with pytest.raises(UnknownNameError, match="'a5.h0' is not a node"):
        circuits.apply_nodes(graph, ["a5.h0"])


def test_bad_counts_are_user_errors():
    graph = Graph(1, 1, 4)
    for bad in (-1, graph.n_edges + 1, 2.0, True):
        with pytest.raises(UserError, match=r"n \(the number of edges\) must be (an integer )?in 0\.\.\d+"):
            circuits.apply_topn(graph, bad)
    with pytest.raises(UserError, match="threshold must be a finite number"):
        circuits.apply_threshold(graph, float("nan"))
