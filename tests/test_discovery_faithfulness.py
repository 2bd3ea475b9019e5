"""Faithfulness and MIB's areas: the area math against closed forms, the curve's ends (empty = 0, full = 1)."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo.discovery import Graph
from minineo.discovery.faithfulness import (MIB_FRACTIONS, area_from_one, area_under, faithfulness,
                                            faithfulness_curve, full_metric, mib_scores)
from minineo.discovery.tasks import induction_pairs, ioi_pairs
from minineo.errors import UserError


def test_a_curve_at_one_has_mibs_maximum_area_0999_and_no_distance_from_one():
    ones = [1.0] * len(MIB_FRACTIONS)
    assert area_under(MIB_FRACTIONS, ones) == pytest.approx(0.999, abs=1e-12)
    assert area_from_one(MIB_FRACTIONS, ones) == pytest.approx(0.0, abs=1e-12)


def test_the_trapezoid_rule_is_exact_on_a_linear_curve():
    # f(p) = a p + b on [.001, 1]: the integral is a (1 - .001^2) / 2 + b (1 - .001), exact for trapezoids
    for a, b in ((1.0, 0.0), (-0.5, 0.7), (2.0, -1.0)):
        values = [a * p + b for p in MIB_FRACTIONS]
        assert area_under(MIB_FRACTIONS, values) == pytest.approx(a * (1 - 1e-6) / 2 + b * 0.999, abs=1e-12)
    # |1 - f| for f(p) = p: the integral of 1 - p over [.001, 1]
    assert area_from_one(MIB_FRACTIONS, list(MIB_FRACTIONS)) == pytest.approx(0.999 - (1 - 1e-6) / 2, abs=1e-12)
    # a curve crossing 1 inside an interval: |1 - f| is not linear there; MIB takes the trapezoid of |1 - f|
    assert area_from_one([0.0, 1.0], [0.0, 2.0]) == pytest.approx(1.0)


def test_a_curve_needs_increasing_fractions():
    with pytest.raises(UserError, match="increase"):
        area_under([0.5, 0.1], [1, 1])
    with pytest.raises(UserError, match="as many"):
        area_under([0.1, 0.5], [1])


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-neo"])
def model(request):
    return minineo.load(request.param)


def scored_graph(model, seed=0) -> Graph:
    graph = Graph.from_model(model)
    scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(seed))
    graph.scores = torch.where(graph.real_edges, scores, torch.zeros(()))
    return graph


def test_curve_ends_are_empty_0_and_full_1(model):
    pairs = ioi_pairs(model, 8)
    graph = scored_graph(model)
    before = graph.scores.clone()
    curve = faithfulness_curve(model, graph, pairs)
    assert torch.equal(graph.scores, before) and graph.n_edges_in_graph == 0  # the graph is not changed
    assert curve.n_edges[0] == int(0.001 * 110) == 0 and curve.faithfulness[0] == pytest.approx(0.0, abs=1e-5)
    assert curve.n_edges[-1] == curve.n_kept[-1] == 110
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    # m(full) is the plain clean run (an oracle independent of the patched forward)
    with torch.no_grad():
        logits = model(pairs.clean, attention_mask=pairs.attention_mask)[:, -1]
    rows = torch.arange(len(pairs))
    assert curve.full == pytest.approx(float((logits[rows, pairs.answer] - logits[rows, pairs.wrong]).mean()), rel=1e-6)
    assert all(k <= n for k, n in zip(curve.n_kept, curve.n_edges))  # pruning only removes


def test_mib_scores_rank_signed_for_cpr_and_absolute_for_cmd(model):
    pairs = induction_pairs(model, 8, seq_len=6)
    graph = scored_graph(model, seed=1)
    scores = mib_scores(model, graph, pairs)
    assert not scores.signed.absolute and scores.absolute.absolute
    assert scores.cpr == pytest.approx(area_under(MIB_FRACTIONS, scores.signed.faithfulness))
    assert scores.cmd == pytest.approx(area_from_one(MIB_FRACTIONS, scores.absolute.faithfulness))
    full = graph.copy()
    full.in_graph = full.real_edges.clone()
    assert faithfulness(model, full, pairs) == pytest.approx(1.0, abs=1e-5)
    assert scores.signed.full == scores.absolute.full == pytest.approx(full_metric(model, pairs))
