"""ACDC's state file: every field is checked (a damaged file is refused, naming the field), and ACDC's scores are in
the metric's units like every other method's."""

from __future__ import annotations

import json
import math

import pytest
import torch

import minineo
from minineo import report
from minineo.discovery import Graph
from minineo.discovery.acdc import acdc, acdc_order, load_state
from minineo.discovery.attribution import attribute
from minineo.discovery.tasks import induction_pairs
from minineo.errors import UserError


@pytest.fixture(scope="module")
def gpt2():
    return minineo.load("tiny-gpt2")


@pytest.fixture(scope="module")
def pairs(gpt2):
    return induction_pairs(gpt2, 2, seq_len=3)


@pytest.fixture(scope="module")
def complete_state(gpt2, pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("acdc") / "state.json"
    acdc(gpt2, pairs, threshold=0.05, state=path)
    return json.loads(path.read_text())


@pytest.mark.parametrize("field, value, said", [
    ("done", "x", '"done" must be a whole number >= 0 (the edges decided), got \'x\''),
    ("done", -3, '"done" must be a whole number >= 0 (the edges decided), got -3'),
    ("done", True, '"done" must be a whole number >= 0 (the edges decided), got True (a bool)'),
    ("done", 2.5, '"done" must be a whole number >= 0 (the edges decided), got 2.5 (a float)'),
    ("done", 500, '"done" is 500, past the graph\'s 110 edges'),
    ("current", "x", '"current" must be a finite number (the circuit\'s metric), got \'x\''),
    ("current", float("nan"), '"current" must be a finite number (the circuit\'s metric), got nan (a float)'),
    ("current", None, '"current" must be a finite number (the circuit\'s metric), got None'),
    ("removed", [], "'removed' must be an object of edge name -> number, got [] (a list)"),
    ("scores", {"m1->logits": "big"}, "'scores': edge 'm1->logits' has 'big', not a finite number"),
    ("scores", {"m1->logits": float("inf")}, "'scores': edge 'm1->logits' has inf (a float), not a finite number"),
])
def test_a_damaged_field_is_refused_naming_it(gpt2, pairs, complete_state, tmp_path, field, value, said):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**complete_state, field: value}))  # json writes NaN / Infinity as Python reads them
    with pytest.raises(UserError) as err:
        acdc(gpt2, pairs, threshold=0.05, state=path)
    assert str(err.value) == (f"{path}: not an ACDC state file ({said}); give another state path (--state) for this "
                              "run, and keep the file if it is something else (a circuit file, say)")


def test_decisions_that_do_not_fit_the_visiting_order_are_refused(gpt2, pairs, complete_state, tmp_path):
    path = tmp_path / "bad.json"
    order = acdc_order(Graph.from_model(gpt2))
    names = {(s, r): n for n, s, r in Graph.from_model(gpt2).edges()}
    first, later = names[order[0]], names[order[50]]
    cases = [  # (the state, what the message says)
        ({**complete_state, "done": 3}, "not among the first 3 edges decided"),  # later decisions than done says
        ({**complete_state, "scores": {**complete_state["scores"], "a9.h9->logits": 0.1}},
         "edge 'a9.h9->logits' is not an edge of this graph"),
    ]
    kept = {k: v for k, v in complete_state["scores"].items() if k != first}
    removed = {k: v for k, v in complete_state["removed"].items() if k != first}
    cases.append(({**complete_state, "scores": kept, "removed": removed},
                  f"\"done\" is 110 but edge {first!r}, decided by then, has no record"))
    assert later  # the order has 110 edges
    for state, said in cases:
        path.write_text(json.dumps(state))
        with pytest.raises(UserError, match="not an ACDC state file") as err:
            acdc(gpt2, pairs, threshold=0.05, state=path)
        assert said in str(err.value)


def test_load_state_checks_the_file_alone_and_a_good_state_resumes(gpt2, pairs, complete_state, tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) is None  # no file yet: a fresh run
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(UserError, match=r"not an ACDC state file \(a JSON list, not an object\)"):
        load_state(path)
    path.write_text(json.dumps({k: v for k, v in complete_state.items() if k != "current"}))
    with pytest.raises(UserError, match=r"not an ACDC state file \(no 'current'\)"):
        load_state(path)
    path.write_text(json.dumps(complete_state))
    assert load_state(path) == complete_state
    fresh = acdc(gpt2, pairs, threshold=0.05)
    assert torch.equal(acdc(gpt2, pairs, threshold=0.05, state=path).in_graph, fresh.in_graph)


def test_acdc_scores_are_metric_units_the_first_edge_equals_the_exact_score(gpt2, pairs, complete_state):
    """The first edge ACDC visits (m1 -> logits) is removed from the full circuit, so its ACDC score is exactly the
    exact method's m(only it corrupted) - m(clean): the same number, not divided by m(full) - m(empty)."""
    graph = Graph.from_model(gpt2)
    found = acdc(gpt2, pairs, threshold=0.05)
    exact = attribute(gpt2, Graph.from_model(gpt2), pairs, method="exact")
    s, r = acdc_order(graph)[0]
    assert float(found.scores[s, r]) == pytest.approx(float(exact.scores[s, r]), rel=1e-4, abs=1e-5)
    assert abs(float(exact.scores[s, r])) > 0.05  # a real score, so a division by the gap would show
    assert complete_state["settings"]["score_unit"] == "metric: m(C without e) - m(C)"
    assert complete_state["scores"]["m1->logits"] == pytest.approx(float(found.scores[s, r]), rel=1e-6)


def test_a_threshold_that_keeps_nothing_says_so(gpt2, pairs):
    with report.collect() as said:
        found = acdc(gpt2, pairs, threshold=1e6)
    assert found.n_edges_in_graph == 0
    assert said == ["ACDC's threshold 1e+06 keeps no edge (every edge changed the metric by less); the empty circuit "
                    "is the corrupted run, not a finding; give a smaller threshold"]


def test_on_empty_raise_hands_the_reason_over_as_an_exception(gpt2, pairs):
    """A caller that wants an error (the command line words it with its --threshold) gets EmptyCircuitError, whose
    `reason` is the why of the warning: no parsing of a message."""
    from minineo.errors import EmptyCircuitError, UserError

    with report.collect() as said, pytest.raises(EmptyCircuitError) as err:
        acdc(gpt2, pairs, threshold=1e6, on_empty="raise")
    assert err.value.reason == "every edge changed the metric by less" and said == []
    with pytest.raises(UserError, match="on_empty"):
        acdc(gpt2, pairs, threshold=1e6, on_empty="quiet")
