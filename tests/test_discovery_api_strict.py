"""The Python API refuses what the CLI refuses: ig_steps with a method that takes none, a top-n or greedy circuit of
an unscored graph, a node named twice."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo.discovery import Graph, apply_greedy, apply_nodes, apply_topn, attribute, circuit_nodes
from minineo.discovery.tasks import induction_pairs
from minineo.errors import UserError


@pytest.mark.parametrize("method", ["eap", "clean-corrupted", "exact"])
def test_ig_steps_with_a_method_that_takes_none_is_refused(method):
    model = minineo.load("tiny-gpt2")
    pairs = induction_pairs(model, 1, seq_len=3)
    with pytest.raises(UserError) as err:
        attribute(model, Graph.from_model(model), pairs, method=method, ig_steps=3)
    assert str(err.value) == (f"ig_steps=3 is for eap-ig-inputs and eap-ig-activations, but method is {method!r}, "
                              "which takes no steps; drop ig_steps, or give an eap-ig method")


@pytest.mark.parametrize("apply", [apply_topn, apply_greedy])
def test_top_n_and_greedy_refuse_an_unscored_graph(apply):
    graph = Graph(2, 4, 16)
    with pytest.raises(UserError, match=rf"^{apply.__name__} ranks edges by score, but the graph has no edge scores "
                                        r"\(all 0\), so it would pick edges arbitrarily; score it first"):
        apply(graph, 5)
    assert apply(graph, 0).n_edges_in_graph == 0  # no edge asked for: nothing arbitrary
    graph.scores[graph.real_edges] = torch.arange(1, graph.n_edges + 1, dtype=torch.float32)
    assert apply(graph, 5, prune=False).n_edges_in_graph == 5


def test_a_node_named_twice_is_refused():
    graph = Graph(2, 4, 16)
    with pytest.raises(UserError, match=r"^nodes names 'm0' twice; give each item once$"):
        apply_nodes(graph, ["m0", "m0"])
    assert circuit_nodes(apply_nodes(graph, ["input", "m0", "m1"])) == ["input", "m0", "m1"]
