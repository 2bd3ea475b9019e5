"""The fifth newcomer pass's discovery findings, each against the behaviour it should have: what a circuit file
records about its scores (its "task" and "faithfulness" keys, any other extra key) travels with the Graph through
the API's readers and writers, and a rescored graph drops it; a plot of a file that records no unit states none;
apply_greedy and apply_nodes say when the circuit they return is empty; Pairs refuses an index that is no pair
selection, naming it and the valid range; pairs whose prompts are all the same are refused as such, wherever a
zero metric gap is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import discovery as D
from minineo import report
from minineo.cli import app, plots
from minineo.discovery import files
from minineo.errors import UserError

RUNNER = CliRunner()
EAP = Path(__file__).parent / "data" / "eap_ig"


@pytest.fixture(scope="module")
def neo():
    return minineo.load()  # tiny-neo: 2 layers x 4 heads


@pytest.fixture(scope="module")
def kl_file(tmp_path_factory):
    """`minineo discover --method acdc --kl --out` on induction, with one more extra key ("data", a note the HTML
    view shows) added to the file as another minineo writer would."""
    folder = tmp_path_factory.mktemp("kl")
    path = folder / "acdckl.json"
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "4", "--method",
                                 "acdc", "--kl", "--out", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert document["task"]["score_unit"] == files.KL_UNIT
    document["data"] = "four induction pairs"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def figures(monkeypatch):
    kept = []

    def keep(fig, plt, path):
        kept.append(fig)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    plt.close("all")


def legend_texts(figure) -> tuple[str, list[str]]:
    legend = figure.legends[0]
    return (legend.get_title().get_text().replace("\n", " "),
            [t.get_text().replace("\n", " ") for t in legend.get_texts()])


# ---- 1: a file's record travels with the Graph ---------------------------------------------------------------------

def extra_keys(path: Path) -> dict:
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        keys = files.EAP_IG_JSON_KEYS
    else:
        document = torch.load(path, weights_only=True)
        keys = files.EAP_IG_PT_KEYS
    return {k: v for k, v in document.items() if k not in keys}


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_an_api_round_trip_keeps_the_files_task_curve_and_other_keys(kl_file, neo, tmp_path, suffix):
    original = extra_keys(kl_file)
    assert set(original) == {"faithfulness", "task", "data"}
    graph = D.load_graph(kl_file, neo)
    assert graph.extras == original
    copy = tmp_path / f"rt{suffix}"
    D.save_graph(graph, copy)
    assert extra_keys(copy) == original
    back = tmp_path / "back.json"  # and through the other format back to JSON: the very bytes written at first
    D.save_graph(D.load_graph(copy, neo), back)
    assert back.read_text() == kl_file.read_text()


def test_each_reader_and_writer_carries_the_record(kl_file, neo, tmp_path):
    original = extra_keys(kl_file)
    assert D.from_json(kl_file, neo).extras == original
    D.to_pt(D.from_json(kl_file), tmp_path / "c.pt")
    assert D.from_pt(tmp_path / "c.pt").extras == original
    D.to_json(D.from_pt(tmp_path / "c.pt"), tmp_path / "c.json")
    assert extra_keys(tmp_path / "c.json") == original
    assert D.load_graph(kl_file).copy().extras == original


def test_an_eap_ig_file_has_no_record_and_is_written_back_byte_for_byte(tmp_path):
    source = EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"
    graph = D.load_graph(source)
    assert graph.extras == {}
    assert D.save_graph(graph, tmp_path / "c.json").read_text() == source.read_text()


def cpr_and_legend(path: Path, figures, plot: Path) -> tuple[str, str, list[str]]:
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "4", "--from",
                                 str(path), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    cpr = re.search(r"CPR\s+\(area under f ([+-])score.*?\)\s+([-\d.]+)", " ".join(result.output.split()))
    title, texts = legend_texts(figures[-1])
    return f"{cpr.group(1)} {cpr.group(2)}", title, texts


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_discover_from_a_round_tripped_file_ranks_and_words_it_as_the_original(kl_file, neo, tmp_path, figures,
                                                                               suffix):
    copy = D.save_graph(D.load_graph(kl_file, neo), tmp_path / f"rt{suffix}")
    original = cpr_and_legend(kl_file, figures, tmp_path / "a.png")
    assert original[0].startswith("+")  # KL scores: the signed ranking is by +score
    assert original[1].startswith("Scores are ACDC's (method acdc, with --kl)")
    assert cpr_and_legend(copy, figures, tmp_path / "b.png") == original


def test_discover_from_with_out_keeps_the_other_extra_keys(kl_file, tmp_path):
    out = tmp_path / "copy.json"
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "4", "--from",
                                 str(kl_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    kept = extra_keys(out)
    assert kept["data"] == "four induction pairs" and kept["task"] == extra_keys(kl_file)["task"]


def test_attribute_and_acdc_drop_the_record_of_the_scores_they_replace(kl_file, neo, tmp_path):
    pairs = D.induction_pairs(neo, 4)
    graph = D.load_graph(kl_file, neo)
    D.attribute(neo, graph, pairs, method="eap")
    assert graph.extras == {}
    D.save_graph(graph, tmp_path / "eap.json")
    assert extra_keys(tmp_path / "eap.json") == {}  # no record claiming ACDC's KL scores
    with report.collect():
        found = D.acdc(neo, pairs, threshold=0.5, graph=D.load_graph(kl_file, neo))
    assert found.extras == {}
    rescored = D.load_graph(kl_file, neo)
    rescored.scores = -rescored.scores  # any new scores
    assert rescored.extras == {}


def test_an_extra_key_json_cannot_hold_is_a_user_error_naming_it(neo, tmp_path):
    graph = D.Graph.from_model(neo)
    graph.extras = {"data": torch.zeros(2)}  # a .pt's extra key may hold a tensor
    D.save_graph(graph, tmp_path / "c.pt")
    assert torch.equal(D.load_graph(tmp_path / "c.pt").extras["data"], torch.zeros(2))
    with pytest.raises(UserError, match=r"graph.extras cannot be written as JSON.*write a \.pt instead"):
        D.save_graph(graph, tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()
    graph.extras = {"edges": {}}
    with pytest.raises(UserError, match=r"graph.extras holds 'edges', a key of EAP-IG's own file"):
        D.save_graph(graph, tmp_path / "d.json")
    graph.extras = {"task": {"name": "ioi"}}
    with pytest.raises(UserError, match=r"graph.extras: the optional \"task\" key must be"):
        D.save_graph(graph, tmp_path / "d.json")


# ---- 5: no unit where the file records none ---------------------------------------------------------------------

def test_the_plot_states_a_unit_only_where_the_file_records_one(tmp_path, figures):
    source = EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-gpt2", "--task", "ioi", "--n", "4", "--from",
                                 str(source), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    _, texts = legend_texts(figures[-1])
    widths = [t for t in texts if t.startswith("width: |score|")]
    assert len(widths) == 3
    for text in widths:  # the number (and "(the largest)"), nothing claiming a unit
        assert re.fullmatch(r"width: \|score\| [\d.e+-]+( \(the largest\))?", text), text
    # while a run, which records its unit, states it
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--task", "ioi", "--n", "4", "--method", "eap",
                                 "--top", "20", "--out", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    _, texts = legend_texts(figures[-1])
    assert [t for t in texts if t.startswith("width:")][0].endswith("(logit difference) (the largest)")


# ---- 8: an empty circuit asked for edges or nodes is said ----------------------------------------------------------

def on_no_path_from_input(neo) -> D.Graph:
    """Scores under which greedy growth from logits takes a1.h0->logits and a1.h1->logits as its first two edges:
    neither starts at input, so both lie on no path from it."""
    graph = D.Graph.from_model(neo)
    graph.scores[graph.real_edges] = 0.01
    logits = graph.logits_index
    graph.scores[graph.sender_index(1, 0), logits] = 5.0
    graph.scores[graph.sender_index(1, 1), logits] = 4.0
    return graph


def test_apply_greedy_warns_when_pruning_leaves_none_of_its_n_edges(neo):
    graph = on_no_path_from_input(neo)
    with report.collect() as said:
        found = D.apply_greedy(graph.copy(), 2)
    assert found.n_edges_in_graph == 0  # the oracle: neither edge starts at input, and no edge into them was taken
    assert len(said) == 1 and said[0].startswith("apply_greedy: the 2 edges grown from logits (n=2) lie on no path "
                                                 "from input to logits") and "give a larger n" in said[0]
    with report.collect() as said:
        D.apply_greedy(graph.copy(), 0)  # n=0 (faithfulness curves ask for it): empty by request, quiet
        assert D.apply_greedy(graph.copy(), 2, prune=False).n_edges_in_graph == 2  # not pruned: not empty
        assert D.apply_greedy(graph.copy(), 40).n_edges_in_graph > 0
    assert said == []


def test_apply_nodes_without_input_warns_and_says_to_add_it(neo):
    graph = D.Graph.from_model(neo)
    with report.collect() as said:
        found = D.apply_nodes(graph.copy(), ["a0.h0", "m1"])
    assert found.n_edges_in_graph == 0
    assert len(said) == 1 and "'input' is not among them" in said[0] and "add 'input' to the nodes" in said[0]
    assert said[0].startswith("apply_nodes: the circuit of the nodes a0.h0, m1 has no edge after pruning")
    with report.collect() as said:
        assert D.apply_nodes(graph.copy(), ["input", "a0.h0", "m1"]).n_edges_in_graph > 0
        assert D.apply_nodes(graph.copy(), ["a0.h0", "m1"], prune=False).n_edges_in_graph > 0
        assert D.apply_nodes(graph.copy(), []).n_edges_in_graph == 0  # no node asked for: quiet
    assert said == []


# ---- 3: Pairs' index --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def four(neo):
    return D.ioi_pairs(neo, 4)


def one_by_one(pairs, rows: list[int]):
    """The oracle: the pairs at `rows`, each taken alone by its int index, stacked."""
    taken = [pairs[i] for i in rows]
    return tuple(torch.cat([getattr(p, name) for p in taken]) for name in ("clean", "corrupted", "answer", "wrong"))


VALID = [(1, [1]), (-1, [3]), (slice(1, 3), [1, 2]), (slice(None, None, -1), [3, 2, 1, 0]), (slice(-2, None), [2, 3]),
         ([0, 2], [0, 2]), ([3, 3, 0], [3, 3, 0]), ([-4], [0]), ([True, False, True, False], [0, 2]),
         (torch.tensor([3, 0]), [3, 0]), (torch.tensor(2), [2]), (torch.tensor([True, False, False, True]), [0, 3]),
         (torch.tensor([1], dtype=torch.int32), [1])]


@pytest.mark.parametrize("index, rows", VALID, ids=[repr(i) for i, _ in VALID])
def test_every_index_torch_takes_selects_the_pairs_taken_one_by_one(four, index, rows):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own warnings (e.g. on sequence indexing) would be a failure
        selected = four[index]
    got = (selected.clean, selected.corrupted, selected.answer, selected.wrong)
    assert all(torch.equal(a, b) for a, b in zip(got, one_by_one(four, rows)))
    assert len(selected) == len(rows)


INVALID = [1.0, [10], torch.tensor([True]), "a", torch.tensor(1.0), slice(5, 9), 4, -5, [], torch.tensor([], dtype=torch.long),
           torch.zeros(4, dtype=torch.bool), torch.tensor([[0, 1]]), torch.tensor([-5]), [0, "a"], slice(0, 4, 0),
           slice(1.0, 2), None, (0, 1)]


@pytest.mark.parametrize("index", INVALID, ids=[repr(i) for i in INVALID])
def test_any_other_index_is_a_user_error_naming_it_and_the_valid_range(four, index):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError) as caught:
            four[index]
    message = str(caught.value)
    assert message.startswith("pair ") and "the 4 pairs are 0..3" in message
    shown = index.tolist() if isinstance(index, torch.Tensor) else index
    assert repr(shown) in message  # the index as given
    assert "token" not in message  # about pairs, not tokens


# ---- 6: pairs whose prompts are all the same are refused as such -------------------------------------------------

PROMPT = "When Mary and John went to the store, John gave a drink to "
SAME_MESSAGE = r"the same clean and corrupted prompts, .*; give pairs whose prompts differ$"


@pytest.fixture(scope="module")
def same(neo):
    return D.Pairs.from_text(neo, [PROMPT, PROMPT[::-1]], [PROMPT, PROMPT[::-1]], ["M", "x"], ["J", "y"])


def scored(neo) -> D.Graph:
    graph = D.Graph.from_model(neo)
    graph.scores[graph.real_edges] = 1.0
    return D.apply_topn(graph, 10)


@pytest.mark.parametrize("call", [
    lambda neo, pairs: D.faithfulness(neo, scored(neo), pairs),
    lambda neo, pairs: D.faithfulness(neo, scored(neo), pairs, full=9.0, empty=1.0),
    lambda neo, pairs: D.faithfulness_curve(neo, scored(neo), pairs),
    lambda neo, pairs: D.mib_scores(neo, scored(neo), pairs),
], ids=["faithfulness", "faithfulness-given-full-empty", "faithfulness_curve", "mib_scores"])
def test_every_gap_refuser_says_the_prompts_are_the_same(neo, same, call):
    assert bool(same.same_prompts().all()) and not bool((same.answer == same.wrong).any())  # the answers differ
    with pytest.raises(UserError, match=r"^pairs: all 2 pairs have " + SAME_MESSAGE) as caught:
        call(neo, same)
    assert "answers differ" not in str(caught.value)


def test_discover_says_the_prompts_are_the_same(tmp_path):
    task = tmp_path / "same.jsonl"
    task.write_text(json.dumps({"clean": PROMPT, "corrupted": PROMPT, "answer": "M", "wrong": "J"}) + "\n")
    result = RUNNER.invoke(app, ["discover", "--model", "tiny-neo", "--task", str(task), "--method", "exact", "--out",
                                 str(tmp_path / "s.json")])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert re.search(rf"error: --task {re.escape(str(task))}: the one pair has " + SAME_MESSAGE, message), message
    assert "answers differ" not in message and not (tmp_path / "s.json").exists()


def test_the_shared_check_counts_the_pairs_that_are_the_same_when_some_differ(neo):
    from minineo.discovery.pairs import check_prompts_differ

    mixed = D.Pairs.from_text(neo, [PROMPT, PROMPT], [PROMPT, PROMPT.replace("Mary", "Anna")], ["M", "M"], ["J", "J"])
    assert check_prompts_differ(mixed) == 1
    with pytest.raises(UserError, match=r"^acdc: the one pair has the same clean and corrupted prompts, so X; give"):
        check_prompts_differ(mixed[0], "so X", name="acdc")
