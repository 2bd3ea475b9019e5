"""Mistakes a newcomer made with the discovery API, each refused with a message that names it (not a number)."""

from __future__ import annotations

import re

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


def test_pairs_ids_beyond_the_vocabulary_are_refused_where_they_meet_the_model(gpt2_circuit):
    """A Pairs knows no model, so it refuses only negative ids; attribute and evaluate refuse ids past d_vocab."""
    model, pairs, circuit = gpt2_circuit
    graph = discovery.Graph.from_model(model)
    far = discovery.Pairs(pairs.clean + 10**6, pairs.corrupted, pairs.attention_mask, pairs.answer, pairs.wrong)
    with pytest.raises(UserError, match="outside the vocabulary"):
        discovery.attribute(model, graph, far)
    with pytest.raises(UserError, match="outside the vocabulary"):
        discovery.evaluate(model, circuit, far)
    wrong = discovery.Pairs(pairs.clean, pairs.corrupted, pairs.attention_mask, pairs.answer, pairs.wrong + 10**6)
    with pytest.raises(UserError, match="answer / wrong ids"):
        discovery.attribute(model, graph, wrong)


@pytest.mark.parametrize("make, message", [
    (lambda p: discovery.Pairs(p.clean[:0], p.corrupted[:0], None, p.answer[:0], p.wrong[:0]), "clean is empty"),
    (lambda p: discovery.Pairs(p.clean - 10**6, p.corrupted, None, p.answer, p.wrong), "clean: token id -"),
    (lambda p: discovery.Pairs(p.clean.float(), p.corrupted, None, p.answer, p.wrong), "clean must be integer ids"),
    (lambda p: discovery.Pairs(p.clean, p.corrupted, p.clean * 0, p.answer, p.wrong), "attention_mask row"),
    (lambda p: discovery.Pairs(p.clean, p.corrupted, [[1]], p.answer, p.wrong), "attention_mask must be None or"),
    (lambda p: p[5], r"pair index 5 is out of range: the 2 pairs are 0\.\.1 \(or -2\.\.-1 from the end\)"),
    (lambda p: list(p.batches(0)), "size must be at least 1"),
    (lambda p: p.batches(0.5), "size must be an integer"),
    (lambda p: p.to("gpu"), "device gpu is not a device"),
])
def test_pairs_mistakes_name_the_field(gpt2_circuit, make, message):
    _, pairs, _ = gpt2_circuit
    with pytest.raises(UserError, match=message):
        make(pairs)


def test_one_pair_by_its_index_is_a_batch_of_one(gpt2_circuit):
    _, pairs, _ = gpt2_circuit
    assert len(pairs[0]) == len(pairs[-1]) == 1 and bool((pairs[-1].clean == pairs.clean[-1:]).all())


@pytest.mark.parametrize("call, message", [
    (lambda g: g.sender_index(2), r"layer must be an integer in 0\.\.1|layer must be in 0\.\.1, got 2"),
    (lambda g: g.sender_index(0.7), "layer must be an integer in 0..1, got 0.7"),
    (lambda g: g.sender_index(0, True), "head must be an integer"),
    (lambda g: g.receiver_index(0, 1), "input must be one of|qkv must be one of"),
    (lambda g: g.receiver_index(0, None, "q"), "no head is given"),
    (lambda g: g.senders_before(10**6), "receiver must be in 0.."),
    (lambda g: g.edge_index(3), "edge name must be a string"),
    (lambda g: g.edge_index("a0.h9->m0"), "edge name 'a0.h9->m0' is not an edge"),
    (lambda g: discovery.Graph(2, 4, 128, model=minineo.load("tiny-gpt2")), r"use Graph\.from_model\(model\)"),
])
def test_graph_index_mistakes_are_user_errors(gpt2_circuit, call, message):
    _, _, circuit = gpt2_circuit
    with pytest.raises(UserError, match=message):
        call(circuit.copy())


def test_the_circuit_page_takes_the_graph_discovery_returned(gpt2_circuit, tmp_path):
    """views.circuit(graph) with the Graph in hand, as a newcomer writes it (it once asked for a file or a dict);
    the page is the one its JSON file gives."""
    _, _, circuit = gpt2_circuit
    discovery.to_json(circuit, tmp_path / "c.json")
    from_file = views.circuit(tmp_path / "c.json").html
    assert views.circuit(circuit).html == from_file.replace('"source":"c.json"', '"source":null')  # nothing else differs


@pytest.mark.parametrize("damage, message", [
    (lambda d, e, n: d["edges"][e].__setitem__("score", "abc"), "has the score 'abc'; every score is a finite number"),
    (lambda d, e, n: d["edges"][e].__setitem__("score", float("nan")), "has the score nan"),
    (lambda d, e, n: d["edges"][e].__setitem__("in_graph", "no"), "has in_graph 'no'; it must be true or false"),
    (lambda d, e, n: d["nodes"].__setitem__(n, {}), "has in_graph None"),
    (lambda d, e, n: d.__setitem__("edges", []), "'edges' must be a JSON object"),
    (lambda d, e, n: d["edges"].__setitem__("zz->yy", {"score": 1.0, "in_graph": True}), "c.json: edge name 'zz->yy'"),
])
def test_a_damaged_circuit_json_is_refused_naming_the_file_and_the_entry(gpt2_circuit, tmp_path, damage, message):
    """Each was a raw ValueError / KeyError / AttributeError, or a NaN score or a truthy "no" read silently."""
    import json

    model, _, circuit = gpt2_circuit
    document = discovery.files.to_document(circuit)
    damage(document, next(iter(document["edges"])), next(iter(document["nodes"])))
    (tmp_path / "c.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match=re.escape(message)):
        discovery.from_json(tmp_path / "c.json", model)


@pytest.mark.parametrize("key, value, message", [
    ("edges_scores", [1.0], "edges_scores must be a tensor"),
    ("edges_scores", "nan", "holding NaN or inf"),
    ("edges_scores", "long", "got a torch.int64 tensor"),
])
def test_a_damaged_circuit_pt_is_refused(gpt2_circuit, tmp_path, key, value, message):
    import torch

    model, _, circuit = gpt2_circuit
    discovery.to_pt(circuit, tmp_path / "c.pt")
    document = torch.load(tmp_path / "c.pt", weights_only=True)
    scores = document[key]
    document[key] = {"nan": scores.clone().fill_(float("nan")), "long": scores.long()}.get(value, value) \
        if isinstance(value, str) else value
    torch.save(document, tmp_path / "c.pt")
    with pytest.raises(UserError, match=message):
        discovery.from_pt(tmp_path / "c.pt", model)


def test_the_same_answer_and_wrong_token_is_refused(gpt2_circuit):
    """logit(answer) - logit(wrong) of one token twice is 0 in every run: refused, not averaged in."""
    model, _, _ = gpt2_circuit
    tokens = model.to_tokens("When Mary and John went")
    with pytest.raises(UserError, match="are the same token"):
        views.attributions(model, tokens, 5, 5)
    with pytest.raises(UserError, match="pair 1: the answer and the wrong answer are the same token"):
        discovery.Pairs.from_text(model, ["When Mary went", "When John went"], ["When Lucy went", "When Paul went"],
                                  ["a", "b"], ["c", "b"])


def test_an_empty_patching_result_is_refused():
    import torch

    with pytest.raises(UserError, match=r"values is empty \(shape \(0, 5\)\)"):
        views.patching(torch.randn(0, 5))


@pytest.mark.parametrize("metric", [lambda logits: logits[:, -1, 0], lambda: 0, lambda logits, pairs, extra: 0],
                         ids=["one argument", "none", "three required"])
@pytest.mark.parametrize("entry", ["attribute", "evaluate", "acdc", "faithfulness"])
def test_a_metric_that_cannot_take_logits_and_pairs_is_refused_saying_what_it_must_take(gpt2_circuit, metric, entry):
    """Finding 10: metric=lambda lg: ... failed "<lambda>() takes 1 positional argument but 2 were given"."""
    model, pairs, circuit = gpt2_circuit
    call = {"attribute": lambda: discovery.attribute(model, discovery.Graph.from_model(model), pairs, metric),
            "evaluate": lambda: discovery.evaluate(model, circuit, pairs, metric),
            "acdc": lambda: discovery.acdc(model, pairs, metric),
            "faithfulness": lambda: discovery.faithfulness(model, circuit, pairs, metric)}[entry]
    with pytest.raises(UserError) as err:
        call()
    said = str(err.value)
    assert "metric(logits, pairs)" in said and "one value per pair" in said and "TypeError" not in said


@pytest.mark.parametrize("metric, message", [
    (lambda logits, pairs: discovery.logit_diff(logits, pairs).mean(), r"returned shape \(\), .* shape \(2,\)"),
    (lambda logits, pairs: discovery.logit_diff(logits, pairs) * float("nan"), "returned nan for pair 0"),
    (lambda logits, pairs: discovery.logit_diff(logits, pairs) / 0, "not finite"),
    (lambda logits, pairs: discovery.logit_diff(logits, pairs).long(), "torch.int64 tensor"),
    (lambda logits, pairs: 1.0, r"returned 1.0 \(a float\)"),
], ids=["mean", "nan", "inf", "integer", "python float"])
@pytest.mark.parametrize("method", ["eap", "exact"])
def test_a_metric_returning_no_finite_value_per_pair_is_one_clear_error(gpt2_circuit, metric, message, method):
    model, pairs, circuit = gpt2_circuit
    with pytest.raises(UserError, match=message):
        discovery.attribute(model, discovery.Graph.from_model(model), pairs, metric, method=method)
    with pytest.raises(UserError, match=message):
        discovery.evaluate(model, circuit, pairs, metric)
