"""ACDC: a faithful circuit on the zoo's IOI task, its decisions against the exact evaluate, and a resumable state."""

from __future__ import annotations

import json

import pytest
import torch

import minineo
from minineo.discovery import Graph
from minineo.discovery.patched import evaluate
from minineo.discovery.acdc import _PatchedRuns, acdc, acdc_order, kl_metric
from minineo.discovery.faithfulness import empty_metric, faithfulness, full_metric
from minineo.discovery.pairs import logit_diff
from minineo.discovery.tasks import induction_pairs, ioi_pairs
from minineo.errors import UserError


@pytest.fixture(scope="module")
def gpt2():
    return minineo.load("tiny-gpt2")


def test_acdc_order_visits_every_edge_once_receivers_from_logits_back():
    graph = Graph(2, 3, 8)
    order = acdc_order(graph)
    assert sorted(order) == sorted((s, r) for _, s, r in graph.edges())
    assert order[0] == (graph.n_senders - 1, graph.logits_index)  # m1 -> logits first
    layers = [graph.receiver_names[r] for _, r in order]
    assert layers.index("m1") < layers.index("a1.h0<q>") < layers.index("m0") < layers.index("a0.h0<q>")


def test_patched_runs_cache_gives_evaluate(gpt2):
    pairs = induction_pairs(gpt2, 4, seq_len=5)
    graph = Graph.from_model(gpt2)
    runs = _PatchedRuns(gpt2, graph, pairs, batch_size=3)  # two batches
    for seed in range(3):
        graph.in_graph = (torch.rand(graph.scores.shape, generator=torch.Generator().manual_seed(seed)) < 0.5) \
            & graph.real_edges
        assert runs.mean(graph, logit_diff) == pytest.approx(float(evaluate(gpt2, graph, pairs).mean()), rel=1e-5)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neo"])
def test_default_acdc_keeps_a_faithful_smaller_circuit_on_ioi(name):
    model = minineo.load(name)
    pairs = ioi_pairs(model, 4)
    circuit = acdc(model, pairs)
    assert 0 < circuit.n_edges_in_graph < circuit.n_edges
    assert faithfulness(model, circuit, pairs) == pytest.approx(1.0, abs=0.1)
    # every removed, measured edge changed the metric by less than the threshold when it was removed; every kept
    # edge's measured change was at least the threshold (or it was pruned away later)
    kept = circuit.in_graph & circuit.real_edges
    gap = full_metric(model, pairs) - empty_metric(model, Graph.from_model(model), pairs)
    # scores are metric units; the threshold reads them divided by m(full) - m(empty)
    assert bool((circuit.scores[kept].abs() >= 0.01 * abs(gap) * (1 - 1e-5)).all())


def test_threshold_zero_keeps_everything_and_a_huge_one_nothing(gpt2):
    pairs = induction_pairs(gpt2, 2, seq_len=3)
    assert acdc(gpt2, pairs, threshold=0.0).n_edges_in_graph == 110
    assert acdc(gpt2, pairs, threshold=1e6).n_edges_in_graph == 0


def test_kl_metric_is_zero_on_the_clean_run_and_positive_elsewhere(gpt2):
    pairs = induction_pairs(gpt2, 4, seq_len=4)
    metric = kl_metric(gpt2)
    with torch.no_grad():
        clean, corrupted = gpt2(pairs.clean), gpt2(pairs.corrupted)
    assert torch.allclose(metric(clean, pairs), torch.zeros(4), atol=1e-6)
    p, q = torch.softmax(clean[:, -1].double(), -1), torch.softmax(corrupted[:, -1].double(), -1)
    expected = (p * (p.log() - q.log())).sum(-1)  # the definition, in float64
    assert torch.allclose(metric(corrupted, pairs).double(), expected, rtol=1e-5)


def test_an_interrupted_run_resumes_from_its_state_file_to_the_same_circuit(gpt2, tmp_path):
    pairs = induction_pairs(gpt2, 2, seq_len=3)
    straight = acdc(gpt2, pairs, threshold=0.02)
    state = tmp_path / "acdc.json"
    calls = {"n": 0}

    def crashing(logits, batch):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return logit_diff(logits, batch)

    with pytest.raises(KeyboardInterrupt):
        acdc(gpt2, pairs, crashing, threshold=0.02, state=state)
    saved = json.loads(state.read_text())
    assert 0 < saved["done"] < 110
    assert not list(tmp_path.glob(".acdc.json.*"))  # no temporary file left behind
    resumed = acdc(gpt2, pairs, crashing, threshold=0.02, state=state)  # the same metric: past call 40 it won't crash
    assert torch.equal(resumed.in_graph, straight.in_graph)
    assert torch.allclose(resumed.scores, straight.scores, atol=1e-5)
    with pytest.raises(UserError, match="computed on something else"):
        acdc(gpt2, pairs, threshold=0.05, state=state)


def test_bad_thresholds_are_user_errors(gpt2):
    pairs = induction_pairs(gpt2, 2, seq_len=3)
    for bad in (-0.1, float("inf"), float("nan"), True):
        with pytest.raises(UserError, match="threshold must be"):
            acdc(gpt2, pairs, threshold=bad)


def test_acdc_on_kl_keeps_a_faithful_smaller_circuit(gpt2):
    pairs = induction_pairs(gpt2, 4, seq_len=4)
    circuit = acdc(gpt2, pairs, kl=True)  # default threshold 0.01 nats
    assert 0 < circuit.n_edges_in_graph < circuit.n_edges
    assert faithfulness(gpt2, circuit, pairs) > 0.8


def test_a_state_resumes_only_on_the_pairs_metric_and_model_it_was_computed_on(gpt2, tmp_path):
    """Finding 2: a state of an IOI run was resumed for induction pairs (the IOI circuit returned). A state records a
    hash of its pairs, its metric and the model by name, and refuses anything else, naming the state's and this run's."""
    state = tmp_path / "acdc.json"
    ioi = ioi_pairs(gpt2, 4)
    acdc(gpt2, ioi, threshold=0.05, state=state)
    settings = json.loads(state.read_text())["settings"]
    assert settings["model"] == "tiny-gpt2"  # the name, not the install folder
    other_tasks = [induction_pairs(gpt2, 4, seq_len=5), ioi_pairs(gpt2, 4, seed=1)]  # same n, other pairs
    for pairs in other_tasks:
        with pytest.raises(UserError, match="computed on something else") as err:
            acdc(gpt2, pairs, threshold=0.05, state=state)
        assert "pairs: the state's" in str(err.value) and settings["pairs"] in str(err.value)

    def doubled(logits, batch):
        return 2 * logit_diff(logits, batch)

    with pytest.raises(UserError, match="metric: the state's 'minineo.discovery.pairs.logit_diff'"):
        acdc(gpt2, ioi, doubled, threshold=0.05, state=state)
    neo = minineo.load("tiny-neo")  # the same shape, another model
    with pytest.raises(UserError, match="model: the state's 'tiny-gpt2', this run's 'tiny-neo'"):
        acdc(neo, ioi_pairs(neo, 4), threshold=0.05, state=state)
    # the same run resumes (the state is complete: nothing is measured again, the same circuit comes back)
    assert torch.equal(acdc(gpt2, ioi, threshold=0.05, state=state).in_graph,
                       acdc(gpt2, ioi, threshold=0.05).in_graph)


def test_acdc_refuses_another_models_graph_as_attribute_and_evaluate_do(gpt2):
    """Finding 5: acdc(tiny_neo, pairs, graph=Graph.from_model(tiny_gpt2)) ran; the three share one check."""
    from minineo.discovery.attribution import attribute

    neo = minineo.load("tiny-neo")
    pairs = induction_pairs(neo, 2, seq_len=3)
    foreign = Graph.from_model(gpt2)
    messages = []
    for call in (lambda: acdc(neo, pairs, graph=foreign), lambda: attribute(neo, foreign, pairs),
                 lambda: evaluate(neo, foreign, pairs)):
        with pytest.raises(UserError) as err:
            call()
        messages.append(str(err.value))
        assert "'tiny-gpt2'" in messages[-1] and "'tiny-neo'" in messages[-1]
    assert len({m.split(" ", 1)[1] for m in messages}) == 1  # one shared check: the same words after the name
