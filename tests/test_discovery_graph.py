"""The edge graph against EAP-IG's own files and the count formula of its convention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minineo
from minineo.discovery import Graph, edge_count
from minineo.errors import UnknownNameError, UserError

DATA = Path(__file__).parent / "data" / "eap_ig"


def closed_form(L: int, H: int) -> int:
    """../shared/discovery/README.md's formula, measured on EAP-IG."""
    return (3 * H + 1) * (L + (H + 1) * L * (L - 1) // 2) + L * H + 1 + L * (H + 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8))
def test_edge_count_is_the_closed_form(L, H):
    graph = Graph(L, H, 8 * H)
    assert graph.n_edges == edge_count(L, H) == closed_form(L, H) == int(graph.real_edges.sum()) == len(graph.edge_names)
    assert len(set(graph.edge_names)) == graph.n_edges


@pytest.mark.parametrize("n_layers, n_heads", [(-2, 4), (0, 0), (0, 4), (2, 0), (2, -1), (True, 4), (2.0, 4), (2, "4"),
                                              (None, 4)])
def test_edge_count_refuses_what_graph_refuses(n_layers, n_heads):
    """Finding 9: edge_count(-2, 4) gave -9 and edge_count(0, 0) gave 1, while Graph(0, 4, 128) is refused."""
    with pytest.raises(UserError) as graph_error:
        Graph(n_layers, n_heads, 128)
    with pytest.raises(UserError) as count_error:
        edge_count(n_layers, n_heads)
    bad = "n_layers" if "n_layers" in str(graph_error.value) else "n_heads"
    assert bad in str(count_error.value)  # the same argument named


def test_gpt2_small_and_zoo_counts():
    assert edge_count(12, 12) == 32491
    for name in ("tiny-neo", "tiny-gpt2"):
        assert Graph.from_model(minineo.load(name)).n_edges == 110


def test_names_and_layout_are_eap_igs():
    written = json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    pt = torch.load(DATA / "eap-ig-tiny-gpt2-ioi16-eap.pt")
    graph = Graph.from_model(minineo.load("tiny-gpt2"))
    assert list(written["edges"]) == graph.edge_names  # same names, same order
    assert list(written["nodes"]) == graph.node_names
    assert pt["src_nodes"] == graph.sender_names and pt["dst_nodes"] == graph.receiver_names
    # every score EAP-IG wrote sits where our index puts it, and nothing outside our edge set is non-zero
    for name, edge in written["edges"].items():
        s, r = graph.edge_index(name)
        assert float(pt["edges_scores"][s, r]) == pytest.approx(edge["score"], abs=1e-7)
    assert not bool((pt["edges_scores"].ne(0) & ~graph.real_edges).any())


def test_receivers_see_only_earlier_senders():
    graph = Graph(3, 2, 8)
    for name, s, r in graph.edges():
        assert s < graph.senders_before(r), name


def test_bad_names_and_shapes():
    graph = Graph(2, 4, 128)
    for bad in ("a1.h0->a0.h1<q>", "a0.h0->a0.h1<q>", "input->a0.h9<q>", "nonsense", "m1->a1.h0<q>"):
        with pytest.raises(UnknownNameError, match="not an edge"):
            graph.edge_index(bad)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(UserError, match="n_layers"):
            Graph(bad, 4, 128)
