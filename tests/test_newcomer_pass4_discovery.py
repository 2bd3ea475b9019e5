"""The fourth newcomer pass's discovery findings, each against the behaviour it should have (not the code's own
output): a pair whose clean and corrupted prompts are the same adds exactly 0 to every score (a batch of only such
pairs runs, all of them are refused, some of them are said); a non-finite edge score is refused by everything that
ranks or writes scores, naming the edge; a circuit file missing a node says so; a folder given as a circuit file is
said to be a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import report
from minineo.discovery import Graph, Pairs, attribute, logit_diff
from minineo.discovery.attribution import METHODS
from minineo.errors import UserError

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def neo():
    return minineo.load()  # tiny-neo: byte-level, 2 layers x 4 heads


# ---- 1 + 2: pairs whose prompts are the same -------------------------------------------------------------------

DIFFERING = (["abcabc", "xyzxyz"], ["abcabd", "xyqxyz"], ["a", "x"], ["b", "a"])
SAME = (["cabcab", "zyxzyx"], ["cabcab", "zyxzyx"], ["c", "z"], ["a", "y"])


def mean_over_positions(logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """A metric of every position (so no run starts at a shared prefix): the logit difference averaged over them."""
    index = torch.arange(len(pairs))
    mean = logits.mean(1)  # (n, d_vocab)
    return mean[index, pairs.answer] - mean[index, pairs.wrong]


def scores(model, pairs, method, batch_size, metric=logit_diff, per_position=False):
    with report.collect() as said:
        graph = attribute(model, Graph.from_model(model), pairs, metric, method=method, batch_size=batch_size,
                          per_position=per_position)
    return graph, said


@pytest.mark.parametrize("batch_size", [None, 1])
@pytest.mark.parametrize("method", METHODS)
def test_pairs_with_the_same_prompts_scale_the_scores_by_the_share_of_pairs_that_differ(neo, method, batch_size):
    differing = Pairs.from_text(neo, *DIFFERING)
    # two identical pairs among the two differing ones: with batch_size=1 two batches hold only identical pairs
    mixed = Pairs.from_text(neo, *(d[:1] + s + d[1:] for d, s in zip(DIFFERING, SAME)))
    alone, _ = scores(neo, differing, method, batch_size)
    together, said = scores(neo, mixed, method, batch_size)
    expected = alone.scores * (2 / 4)  # the identical pairs add 0 and count in the mean
    assert float(expected.abs().max()) > 0
    assert torch.allclose(together.scores, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert said == ["2 of 4 pairs have the same clean and corrupted prompts; they add 0 to every score, which is a "
                    "mean over all 4 pairs (drop them to average over the 2 whose prompts differ)"]


@pytest.mark.parametrize("method", ["eap", "clean-corrupted", "exact"])
def test_a_batch_of_only_same_prompts_adds_zero_with_a_metric_of_every_position(neo, method):
    # no shared prefix: the run starts at position 0 and no position moves in the identical pairs' batches
    differing = Pairs.from_text(neo, *DIFFERING)
    mixed = Pairs.from_text(neo, *(d + s for d, s in zip(DIFFERING, SAME)))
    alone, _ = scores(neo, differing, method, 1, mean_over_positions)
    together, _ = scores(neo, mixed, method, 1, mean_over_positions)
    expected = alone.scores / 2
    assert float(expected.abs().max()) > 0
    assert torch.allclose(together.scores, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("method", METHODS[:4])
def test_per_position_scores_of_same_prompt_pairs_add_zero_at_every_position(neo, method):
    differing = Pairs.from_text(neo, *DIFFERING)
    mixed = Pairs.from_text(neo, *(d + s for d, s in zip(DIFFERING, SAME)))
    alone, _ = scores(neo, differing, method, 1, per_position=True)
    together, _ = scores(neo, mixed, method, 1, per_position=True)
    expected = alone.position_scores / 2  # (pos, n_senders, n_receivers)
    assert together.position_scores.shape == expected.shape
    assert torch.allclose(together.position_scores, expected, rtol=1e-4,
                          atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_pairs_that_all_have_the_same_prompts_are_refused(neo, method):
    pairs = Pairs.from_text(neo, *SAME)
    with pytest.raises(UserError, match=r"^pairs: all 2 pairs have the same clean and corrupted prompts, so every "
                                        r"score would be 0 .*give pairs whose prompts differ$"):
        attribute(neo, Graph.from_model(neo), pairs, method=method)
    one = Pairs.from_text(neo, ["abcabc"], ["abcabc"], ["a"], ["b"])  # the newcomer's reproduction
    with pytest.raises(UserError, match="^pairs: the one pair has the same clean and corrupted prompts"):
        attribute(neo, Graph.from_model(neo), one, method=method)


@pytest.mark.parametrize("metric", [logit_diff, mean_over_positions])
@pytest.mark.parametrize("batch_size", [None, 1])
def test_a_pair_with_the_same_prompts_evaluates_to_its_clean_metric_in_every_circuit(neo, metric, batch_size):
    from minineo.discovery import apply_topn, evaluate

    # the identical pairs first, and one of another length (padding): its clean and corrupted runs are one run
    pairs = Pairs.from_text(neo, *(s + d + [t] for s, d, t in zip(SAME, DIFFERING, ["abab", "abab", "b", "a"])))
    logits = neo(pairs.clean, attention_mask=pairs.attention_mask)
    clean = metric(logits, pairs)  # (n,)
    graph = Graph.from_model(neo)
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(1))
    circuits = [apply_topn(graph.copy(), k, prune=False) for k in (0, 7, 40)] + [Graph.from_model(neo)]
    values = evaluate(neo, circuits, pairs, metric, batch_size=batch_size)  # (circuit, n)
    same = pairs.same_prompts()
    assert same.tolist() == [True, True, False, False, True]
    assert torch.allclose(values[:, same], clean[same].expand(len(circuits), -1), atol=1e-5)


def test_same_prompts_ignores_the_padding_of_a_pair():
    clean = torch.tensor([[0, 5, 6], [7, 8, 9]])
    corrupted = torch.tensor([[3, 5, 6], [7, 8, 1]])  # pair 0 differs only where it is padding
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pairs = Pairs(clean, corrupted, mask, torch.tensor([1, 2]), torch.tensor([2, 1]))
    assert pairs.same_prompts().tolist() == [True, False]
    assert Pairs(clean, corrupted, None, torch.tensor([1, 2]), torch.tensor([2, 1])).same_prompts().tolist() == \
        [False, False]


def test_the_cli_scores_a_task_whose_batch_holds_only_same_prompts(tmp_path):
    from minineo.cli import app

    task = tmp_path / "half.jsonl"
    task.write_text('{"clean": "abcabc", "corrupted": "abcabd", "answer": "a", "wrong": "x"}\n'
                    '{"clean": "xyzxyz", "corrupted": "xyzxyz", "answer": "x", "wrong": "a"}\n')
    result = RUNNER.invoke(app, ["discover", "--task", str(task), "--method", "eap", "--out",
                                 str(tmp_path / "half1.json"), "--batch-size", "1"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "1 of 2 pairs have the same clean and corrupted prompts" in result.output
    assert (tmp_path / "half1.json").is_file()


# ---- 3: non-finite edge scores ---------------------------------------------------------------------------------

def scored_graph(model, bad: dict[str, float]) -> Graph:
    graph = Graph.from_model(model)
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(0))
    for name, value in bad.items():
        graph.scores[graph.edge_index(name)] = value
    return graph


def score_readers(model, tmp_path):
    from minineo import discovery as D

    pairs = D.ioi_pairs(model, 4)
    return {
        "apply_topn": lambda g: D.apply_topn(g.copy(), 5, prune=False),
        "apply_greedy": lambda g: D.apply_greedy(g.copy(), 5),
        "apply_threshold": lambda g: D.apply_threshold(g.copy(), 0.5),
        "faithfulness_curve": lambda g: D.faithfulness_curve(model, g, pairs),
        "mib_scores": lambda g: D.mib_scores(model, g, pairs),
        "to_json": lambda g: D.to_json(g, tmp_path / "c.json"),
        "to_pt": lambda g: D.to_pt(g, tmp_path / "c.pt"),
        "save_graph": lambda g: D.save_graph(g, tmp_path / "c.json"),
        "to_document": lambda g: D.files.to_document(g),
    }


READERS = ["apply_topn", "apply_greedy", "apply_threshold", "faithfulness_curve", "mib_scores", "to_json", "to_pt",
           "save_graph", "to_document"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_that_ranks_or_writes_scores_refuses_a_non_finite_one_naming_the_edge(neo, tmp_path, reader,
                                                                                         value):
    graph = scored_graph(neo, {"input->a0.h0<q>": value})
    run = score_readers(neo, tmp_path)[reader]
    with pytest.raises(UserError, match=rf"^{reader}: graph\.scores holds {value} for the edge 'input->a0\.h0<q>' "
                                        r"\(the only non-finite score\).*torch\.nan_to_num"):
        run(graph)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("reader", ["apply_topn", "to_json", "faithfulness_curve"])
def test_the_first_non_finite_score_is_named_in_eap_igs_edge_order(neo, tmp_path, reader):
    # input->logits comes first in the (senders, receivers) matrix, a0.h0->m0 first in EAP-IG's edge order
    graph = scored_graph(neo, {"input->logits": float("inf"), "a0.h0->m0": float("nan")})
    names = [name for name, _, _ in graph.edges()]
    assert names.index("a0.h0->m0") < names.index("input->logits")
    with pytest.raises(UserError, match=r"holds nan for the edge 'a0\.h0->m0' \(the first of 2 non-finite scores\)"):
        score_readers(neo, tmp_path)[reader](graph)


@pytest.mark.parametrize("reader", READERS)
def test_a_non_finite_value_where_no_edge_is_is_not_read(neo, tmp_path, reader):
    graph = scored_graph(neo, {})
    graph.scores[~graph.real_edges] = float("nan")  # cells that are no edge: never ranked, never written
    score_readers(neo, tmp_path)[reader](graph)


# ---- 8: a circuit file missing a node --------------------------------------------------------------------------

EAP_IG_TOP20 = Path(__file__).parent / "data" / "eap_ig" / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"


def without_node(tmp_path, node: str) -> tuple[Path, int]:
    """EAP-IG's own top-20 file with `node` deleted from "nodes", and the count of its in-circuit edges in and out."""
    document = json.loads(EAP_IG_TOP20.read_text())
    assert set(document["nodes"]) == {"input", "logits", "m0", "m1"} | {f"a{l}.h{h}" for l in (0, 1) for h in range(4)}
    del document["nodes"][node]
    n = sum(info["in_graph"] for name, info in document["edges"].items()
            if name.startswith(f"{node}->") or name.split("->")[1].split("<")[0] == node)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    return path, n


def test_a_node_in_the_circuit_missing_from_nodes_is_said_to_be_missing(tmp_path):
    from minineo.discovery import load_graph

    path, n = without_node(tmp_path, "a0.h1")
    assert n == 4  # input->a0.h1<k>, <v>; a0.h1->m0, ->m1
    with pytest.raises(UserError) as err:
        load_graph(path, minineo.load("tiny-gpt2"))
    assert str(err.value) == (f"{path}: node 'a0.h1' is missing from 'nodes' (a node not listed is read as out of the "
                              "circuit), but 4 of its edges, in and out, are in_graph true; add \"a0.h1\": "
                              "{\"in_graph\": true} to 'nodes' (EAP-IG's to_json and minineo write every node), or "
                              "mark its edges out")


def test_the_cli_says_a_node_is_missing_from_nodes(tmp_path):
    from minineo.cli import app

    path, _ = without_node(tmp_path, "a1.h0")
    result = RUNNER.invoke(app, ["discover", "--from", str(path), "--model", "tiny-gpt2", "--n", "4"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "node 'a1.h0' is missing from 'nodes'" in " ".join(result.output.split())


def test_a_node_out_of_the_circuit_may_be_left_out_of_nodes(tmp_path):
    from minineo.discovery import circuit_nodes, load_graph

    path, n = without_node(tmp_path, "a0.h0")  # out of EAP-IG's circuit: EAP-IG's from_json reads such a file too
    assert n == 0
    graph = load_graph(path)
    assert "a0.h0" not in circuit_nodes(graph) and graph.n_edges_in_graph == 18


# ---- 9: a folder given as a circuit file -----------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["load_graph", "from_json", "from_pt", "read_file"])
def test_every_circuit_file_reader_says_a_folder_is_a_folder(tmp_path, reader):
    from minineo.discovery import files
    from minineo.errors import MissingFileError

    folder = tmp_path / "circuit.json"  # a folder, even with a file's name
    folder.mkdir()
    read = getattr(files, reader)
    with pytest.raises(UserError) as err:
        read(folder, minineo.load("tiny-gpt2"))
    assert not isinstance(err.value, MissingFileError)
    assert str(err.value).startswith(f"path {folder} is a folder, not a file; give the path of an EAP-IG graph file")
    with pytest.raises(MissingFileError, match="^" + re.escape(f"path {tmp_path / 'none.json'} does not exist; give the path")):
        read(tmp_path / "none.json")
