"""The third newcomer pass's findings, each against the behaviour it should have (not the code's own output):
an empty corpus file is one error line; a JSONL pair's length counts the BOS the tokenizer prepends; a circuit copied
with --from keeps the task its scores came from; an empty model name is no identity; each circuit writer refuses the
other's extension; a faithfulness curve needs two increasing fractions; a page of an empty circuit says what it
opens on instead."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import minineo
from minineo import report
from minineo.cli import app
from minineo.discovery import Graph, Pairs, attribute, faithfulness_curve, to_json, to_pt
from minineo.errors import UserError

RUNNER = CliRunner()


@pytest.mark.parametrize("command", [["eval", "{corpus}", "--max-tokens", "512"],
                                     ["harvest", "{corpus}", "--names", "blocks.1.resid_post", "--out", "{tmp}/hv",
                                      "--max-tokens", "512"]])
def test_an_empty_jsonl_corpus_is_one_error_line(tmp_path, command):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("")
    args = [a.format(corpus=corpus, tmp=tmp_path) for a in command]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (f"error: the corpus {corpus} holds no documents (the file is "
                                                      "empty); give a non-empty corpus")


def test_a_jsonl_pair_one_token_past_the_context_with_bos_is_refused_naming_its_line(tmp_path):
    model = minineo.load("tiny-neo")  # byte-level: 128 characters are 128 tokens, 129 with BOS, n_ctx 128
    rows = [{"clean": "a" * 127 + " ", "corrupted": "b" * 127 + " ", "answer": "a", "wrong": "b"}]
    path = tmp_path / "edge.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"edge.jsonl, line 1: the prompts are 129 tokens \(with BOS\)"):
        Pairs.from_jsonl(model, path)
    rows = [{"clean": "a" * 126 + " ", "corrupted": "b" * 126 + " ", "answer": "a", "wrong": "b"}]  # 128 with BOS
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert Pairs.from_jsonl(model, path).clean.shape == (1, 128)


def test_a_copy_made_with_from_keeps_the_task_its_scores_were_computed_on(tmp_path):
    first, copy = tmp_path / "g8.json", tmp_path / "copy.json"
    base = ["discover", "--model", "tiny-gpt2", "--n", "8"]
    assert RUNNER.invoke(app, [*base, "--task", "ioi", "--method", "eap", "--top", "20", "--out", str(first)]).exit_code == 0
    result = RUNNER.invoke(app, [*base, "--from", str(first), "--task", "induction", "--out", str(copy)])
    assert result.exit_code == 0, result.output
    assert "evaluated here on other pairs" in result.output
    assert json.loads(copy.read_text())["task"] == json.loads(first.read_text())["task"]  # ioi's, not induction's


def test_an_empty_model_name_is_no_identity_and_is_refused(tmp_path):
    model = minineo.load("tiny-gpt2")
    with pytest.raises(UserError, match="non-empty"):
        Graph.from_model(model, name="")
    path = tmp_path / "c.json"
    to_json(Graph.from_model(model), path)
    document = json.loads(path.read_text())
    document["cfg"]["model"] = ""
    path.write_text(json.dumps(document))
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--from", str(path), "--n", "4"])
    assert result.exit_code == 1 and "non-empty string" in result.output, result.output


def test_each_circuit_writer_refuses_the_other_files_extension(tmp_path):
    graph = Graph.from_model(minineo.load("tiny-gpt2"))
    with pytest.raises(UserError, match=r"writes EAP-IG's \.json file.*to_pt"):
        to_json(graph, tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"writes EAP-IG's \.pt file.*to_json"):
        to_pt(graph, tmp_path / "x.json")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("fractions", [[0.0], [0.5], [0.5, 0.1], [0.2, 0.2]])
def test_a_faithfulness_curve_needs_two_increasing_fractions_when_it_is_made(fractions):
    model = minineo.load("tiny-gpt2")
    pairs = Pairs.from_text(model, ["ab"], ["cb"], ["a"], ["c"])
    graph = attribute(model, Graph.from_model(model), pairs)
    with pytest.raises(UserError, match="at least 2 increasing edge fractions"):
        faithfulness_curve(model, graph, pairs, fractions=fractions)


def test_the_page_of_an_empty_circuit_says_it_opens_on_the_top_edges_instead(tmp_path):
    from minineo import views

    model = minineo.load("tiny-gpt2")
    pairs = Pairs.from_text(model, ["ab"], ["cb"], ["a"], ["c"])
    path = tmp_path / "empty.json"
    to_json(attribute(model, Graph.from_model(model), pairs), path)  # scored, nothing in_graph
    with report.collect() as said:
        views.circuit(path)
    assert len(said) == 1 and "marks no edge in_graph" in said[0] and "top 50 edges" in said[0]


def test_a_kl_metric_made_for_another_model_is_refused():
    from minineo.discovery import evaluate, kl_metric

    neo, gpt2 = minineo.load("tiny-neo"), minineo.load("tiny-gpt2")
    pairs = Pairs.from_text(neo, ["ab"], ["cb"], ["a"], ["c"])
    with pytest.raises(UserError, match="the metric was made for tiny-gpt2"):
        attribute(neo, Graph.from_model(neo), pairs, metric=kl_metric(gpt2))
    with pytest.raises(UserError, match="the metric was made for tiny-gpt2"):
        evaluate(neo, Graph.from_model(neo), pairs, kl_metric(gpt2))
    assert attribute(neo, Graph.from_model(neo), pairs, metric=kl_metric(neo)).scores.abs().sum() > 0


def test_acdc_kl_scores_are_ranked_and_labelled_as_kl_in_the_table_the_file_and_the_page(tmp_path):
    """A KL score is positive where removing the edge hurts (the KL from the clean run rises), the opposite sense of a
    logit difference: the signed ranking is by +score, the file records the unit, the page says what the scores are,
    and the file read back with --from gives the same CPR."""
    from minineo import views

    out = tmp_path / "kl.json"
    base = ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "8"]
    first = RUNNER.invoke(app, [*base, "--method", "acdc", "--kl", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "kept +score" in first.output and "area under f +score" in first.output
    task = json.loads(out.read_text())["task"]
    assert task["method"] == "acdc" and task["score_unit"] == "KL divergence from the clean run, nats"
    again = RUNNER.invoke(app, [*base, "--from", str(out)])
    cpr = [line for line in first.output.splitlines() if "CPR" in line]
    assert again.exit_code == 0 and "kept +score" in again.output, again.output
    assert cpr and cpr == [line for line in again.output.splitlines() if "CPR" in line]
    page = views.circuit(out).html if hasattr(views.circuit(out), "html") else str(views.circuit(out)._repr_html_())
    assert "Scores are ACDC" in page and "nats" in page


def test_a_circuit_file_edge_without_in_graph_is_refused(tmp_path):
    from minineo.discovery import load_graph

    model = minineo.load("tiny-gpt2")
    path = tmp_path / "c.json"
    to_json(Graph.from_model(model), path)
    document = json.loads(path.read_text())
    first = next(iter(document["edges"]))
    del document["edges"][first]["in_graph"]
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=rf"edge '{first}' has no \"in_graph\""):
        load_graph(path, model)
