"""Mistakes a newcomer made with the discovery API, each refused with a message that names it (not a number)."""

from __future__ import annotations

import pytest

import minineo
from minineo import discovery, views
from minineo.errors import UserError


@pytest.fixture(scope="module")
def gpt2_circuit():
    model = minineo.load("tiny-gpt2")
    pairs = discovery.ioi_pairs(model, 2)
    return model, pairs, discovery.apply_topn(discovery.attribute(model, discovery.Graph.from_model(model), pairs), 10)


def test_a_circuit_of_another_model_of_the_same_shape_is_refused_naming_both(gpt2_circuit):
    _, _, circuit = gpt2_circuit
    neo = minineo.load("tiny-neo")
    with pytest.raises(UserError, match=r"another model \('tiny-gpt2'.*this one \('tiny-neo'"):
        discovery.faithfulness(neo, circuit, discovery.ioi_pairs(neo, 2))
    with pytest.raises(UserError, match="another model"):
        discovery.evaluate(neo, circuit, discovery.ioi_pairs(neo, 2))


def test_an_unscored_graph_has_no_curve(gpt2_circuit):
    model, pairs, _ = gpt2_circuit
    with pytest.raises(UserError, match="no edge scores"):
        discovery.mib_scores(model, discovery.Graph.from_model(model), pairs)


def test_a_nan_sampling_temperature_is_refused():
    model = minineo.load()
    with pytest.raises(UserError, match="temperature"):
        model.generate(model.to_tokens("hi"), 2, do_sample=True, temperature=float("nan"))


def test_the_circuit_page_names_the_model_minineo_wrote(gpt2_circuit, tmp_path):
    _, _, circuit = gpt2_circuit
    path = discovery.to_json(circuit, tmp_path / "c.json")
    assert "tiny-gpt2" in views.circuit(path).html
