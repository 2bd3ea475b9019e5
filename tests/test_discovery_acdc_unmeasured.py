"""ACDC's edges into a node that reaches nothing any more are removed without a forward pass: their score is 0
exactly, by construction. The state file records them in "scores" like every measured edge (so the state and the
circuit file agree), and the brute-force change m(C without e) - m(C) at their turn is 0."""

from __future__ import annotations

import json

import pytest
import torch

import minineo
from minineo.discovery import Graph
from minineo.discovery.acdc import acdc, acdc_order, kl_metric
from minineo.discovery.pairs import logit_diff
from minineo.discovery.patched import evaluate
from minineo.discovery.tasks import induction_pairs


@pytest.fixture(scope="module")
def gpt2():
    return minineo.load("tiny-gpt2")


@pytest.fixture(scope="module")
def pairs(gpt2):
    return induction_pairs(gpt2, 2, seq_len=3)


def circuits_along_the_way(graph: Graph, removed: set[str]):
    """(edge name, (sender, receiver), the circuit when ACDC reached the edge) in ACDC's order, rebuilt from the
    state's "removed" alone: the full graph less the removed edges visited before."""
    names = {(s, r): name for name, s, r in graph.edges()}
    circuit = graph.copy()
    circuit.in_graph = circuit.real_edges.clone()
    for edge in acdc_order(graph):
        yield names[edge], edge, circuit.copy()
        if names[edge] in removed:
            circuit.in_graph[edge] = False


@pytest.mark.parametrize("kl, threshold", [(True, 0.01), (False, 0.2)])
def test_every_edge_is_scored_in_the_state_and_an_unmeasured_one_changes_the_metric_by_exactly_0(
        gpt2, pairs, tmp_path, kl, threshold):
    path = tmp_path / "state.json"
    found = acdc(gpt2, pairs, threshold=threshold, kl=kl, state=path)
    state = json.loads(path.read_text())
    graph = Graph.from_model(gpt2)
    assert sorted(state["scores"]) == sorted(graph.edge_names)  # every edge decided has its score in the state
    for name, s, r in found.edges():  # the state and the circuit (what the file writes) agree
        assert state["scores"][name] == pytest.approx(float(found.scores[s, r]), rel=1e-6, abs=0), name
    metric = kl_metric(gpt2) if kl else logit_diff
    unreached = 0
    for name, (s, r), circuit in circuits_along_the_way(graph, set(state["removed"])):
        receiver = graph.receiver_names[r].split("<")[0]
        if receiver == "logits" or bool(circuit.in_graph[graph.sender_names.index(receiver)].any()):
            continue  # the receiver still reaches something: a measured edge
        unreached += 1
        without = circuit.copy()
        without.in_graph[s, r] = False
        change = float(evaluate(gpt2, without, pairs, metric).double().mean()
                       - evaluate(gpt2, circuit, pairs, metric).double().mean())
        assert change == pytest.approx(0.0, abs=1e-7), name  # brute force: the edge cannot matter here
        assert state["scores"][name] == 0.0 and name in state["removed"], name
    assert unreached >= 3  # the case is exercised (21 in KL mode, 24 at 0.2 in metric mode)


def test_a_state_of_an_older_minineo_without_the_unmeasured_scores_resumes(gpt2, pairs, tmp_path, monkeypatch):
    """An older minineo kept the edges removed without a forward in "removed" only: such a state, stopped part way,
    resumes to the same circuit, and the state written from then on lists them in "scores" too."""
    import importlib

    module = importlib.import_module("minineo.discovery.acdc")  # the module (minineo.discovery.acdc is the function)
    written = []
    write = module._write_state
    monkeypatch.setattr(module, "_write_state", lambda path, state: (written.append(json.loads(json.dumps(state))),
                                                                     write(path, state)))
    path = tmp_path / "state.json"
    straight = acdc(gpt2, pairs, threshold=0.01, kl=True, state=path)
    final = json.loads(path.read_text())
    assert sorted(final["scores"]) == sorted(straight.edge_names)
    unmeasured = {n for n, v in final["removed"].items() if v == 0.0}
    part = next(w for w in written if set(w["removed"]) & unmeasured and w["done"] < len(written) - 5)
    old = {**part, "scores": {n: v for n, v in part["scores"].items() if n not in unmeasured}}  # as it was written
    path.write_text(json.dumps(old))
    resumed = acdc(gpt2, pairs, threshold=0.01, kl=True, state=path)
    assert torch.equal(resumed.in_graph, straight.in_graph) and torch.equal(resumed.scores, straight.scores)
    assert json.loads(path.read_text())["scores"] == final["scores"]
