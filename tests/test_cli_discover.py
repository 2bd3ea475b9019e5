"""`minineo discover`: on EAP-IG's own pairs it writes EAP-IG's own top-20 circuit; its errors are one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo.cli import app  # importing the package registers every command
from minineo.discovery import Graph, files

runner = CliRunner()
DATA = Path(__file__).parent / "data" / "eap_ig"


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)


def test_eap_top_20_on_eap_igs_pairs_writes_eap_igs_circuit_and_plots_it(tmp_path):
    out, plot = tmp_path / "circuit.json", tmp_path / "circuit.png"
    result = invoke("discover", "--model", "tiny-gpt2", "--task", str(DATA / "tiny-gpt2-ioi16.jsonl"), "--method",
                    "eap", "--top", "20", "--out", str(out), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "16 pairs" in text and "20 edges, 18 after pruning, 7 nodes" in text
    assert "m(full) +" in text and "m(empty) +" in text and "CPR" in text and "CMD" in text
    written, expected = json.loads(out.read_text()), json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap-top20.json").read_text())
    assert written["cfg"]["model"] == "tiny-gpt2"
    assert written["nodes"] == expected["nodes"]
    assert list(written["edges"]) == list(expected["edges"])  # EAP-IG's names and order
    for name, edge in expected["edges"].items():
        assert written["edges"][name]["in_graph"] == edge["in_graph"], name
        assert written["edges"][name]["score"] == pytest.approx(edge["score"], abs=1e-4, rel=1e-4), name
    assert plot.stat().st_size > 10_000


def test_acdc_on_induction_and_its_file_read_back(tmp_path):
    out = tmp_path / "c.pt"
    result = invoke("discover", "--model", "tiny-neo", "--task", "induction", "--method", "acdc", "--n", "4",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "ACDC, threshold 0.01" in text and "after pruning" in text
    again = invoke("discover", "--model", "tiny-neo", "--task", "induction", "--n", "4", "--from", str(out),
                   "--out", str(tmp_path / "again.json"))
    assert again.exit_code == 0, again.output
    kept = text.split("after pruning")[0].split()[-1]
    assert f"{kept} after pruning" in " ".join(again.output.split())


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([{"clean": "ab cd", "corrupted": "ab c", "answer": "x", "wrong": "y"}], "same token length"),
    ([{"clean": "ab cd", "corrupted": "ab ce", "answer": " Mary", "wrong": "y"}], "single-token answer"),
])
def test_bad_pairs_are_one_error_line(tmp_path, rows, message):
    task = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = runner.invoke(app, ["discover", "--task", task, "--method", "eap", "--out", str(tmp_path / "c.json")],
                           terminal_width=200)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_unknown_method_and_a_circuit_for_another_model_are_one_error_line(tmp_path):
    result = runner.invoke(app, ["discover", "--method", "eapp", "--out", str(tmp_path / "c.json")], terminal_width=200)
    assert result.exit_code == 1 and "--method 'eapp' is not a method" in result.output
    assert "acdc" in result.output and len(result.output.strip().splitlines()) == 1
    # same shape (2 x 4 x 128), but the file names tiny-gpt2
    files.save_graph(Graph.from_model(minineo.load("tiny-gpt2")), tmp_path / "g.json")
    result = runner.invoke(app, ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "2", "--from",
                                 str(tmp_path / "g.json"), "--out", str(tmp_path / "n.json")], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "another model ('tiny-gpt2'" in result.output and "('tiny-neo'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_from_a_saved_circuit_needs_no_out_and_writes_nothing(tmp_path):
    """Re-using a circuit file: the faithfulness table (and --plot) without --out; nothing else is written."""
    from minineo.discovery import circuits

    saved = tmp_path / "c.json"
    graph = Graph.from_model(minineo.load("tiny-neo"))
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(0)) * graph.real_edges
    circuits.apply_topn(graph, 10, absolute=True, prune=False)
    files.save_graph(graph, saved)
    before = saved.read_bytes()
    plot = tmp_path / "again.png"
    result = invoke("discover", "--model", "tiny-neo", "--task", "induction", "--n", "2", "--from", str(saved),
                    "--plot", str(plot))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "read from" in text and "faithfulness curve" in text and f"wrote {plot}" in text
    assert "wrote " + str(saved) not in text and saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "c.json"]


@pytest.mark.parametrize("args, message", [
    ([], "--out is missing"),  # a method runs: its scores need a file
    (["--from", "nowhere.json"], "--from nowhere.json does not exist"),
    (["--from", "{saved}", "--threshold", "0.1"], "--threshold is for running a method"),
    (["--from", "{saved}", "--kl", "--state", "s.pt"], "--kl, --state are for running a method"),
])
def test_out_and_from_mistakes_are_one_error_line_before_any_work(tmp_path, args, message):
    saved = tmp_path / "c.json"
    files.save_graph(Graph.from_model(minineo.load("tiny-neo")), saved)
    args = [a.replace("{saved}", str(saved)) for a in args]
    result = runner.invoke(app, ["discover", "--task", "induction", "--n", "2", *args], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--method", "eap", "--top", "0"], "--top must be at least 1, got 0"),  # an empty circuit: faithfulness 0 always
    (["--method", "eap", "--top", "-2"], "--top must be at least 1, got -2"),
    (["--method", "eap", "--top", "100000"], "--top must be between 1 and the model's"),
    (["--method", "eap", "--threshold", "1e9"], "--threshold 1e+09 keeps no edge: the largest |score| is"),
    (["--method", "eap", "--threshold", "nan"], "--threshold must be a finite number"),
    (["--method", "eap-ig-inputs", "--ig-steps", "0"], "--ig-steps must be at least 1, got 0"),
    (["--method", "exact", "--state", "s.pt"], "--state is ACDC's, but --method is exact"),
    (["--method", "eap", "--kl"], "--kl is ACDC's, but --method is eap"),
])
def test_discover_option_mistakes_are_one_error_line(tmp_path, args, message):
    result = runner.invoke(app, ["discover", "--task", "induction", "--n", "2", "--out", str(tmp_path / "c.json"),
                                 *args], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("command", [["discover-compare"], ["discover", "--task", "induction", "--out", "c.json"]])
def test_an_empty_model_name_is_one_error_line_not_the_current_folder(command):
    """`--model ''` was Path('') = the current folder ("no config.json in ."); it is an empty name."""
    result = runner.invoke(app, [*command, "--model", ""], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: model '' is empty") and len(result.output.strip().splitlines()) == 1


# ---- the faithfulness table: each ranking's own size; the file holds the curve the view draws ----------------------

def _on_a_path(kept: list[str]) -> set[str]:
    """The edges of `kept` on some path input -> logits (what pruning leaves), by plain graph search over the names."""
    parts = [(name.split("->")[0], name.split("->")[1].split("<")[0], name) for name in kept]
    forward, backward = {"input"}, {"logits"}
    for _ in range(len(parts) + 1):  # to the fixed point
        forward |= {r for s, r, _ in parts if s in forward}
        backward |= {s for s, r, _ in parts if r in backward}
    return {name for s, r, name in parts if s in forward and r in backward}


def _pruned_top(scores: dict[str, float], k: int, key) -> int:
    ranked = sorted(scores, key=key, reverse=True)
    return len(_on_a_path(ranked[:k]))


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_the_table_gives_each_ranking_its_own_pruned_size_and_the_file_holds_the_curve(tmp_path, suffix):
    out = tmp_path / f"circuit{suffix}"
    result = invoke("discover", "--model", "tiny-gpt2", "--task", "ioi", "--n", "8", "--method", "eap-ig-inputs",
                    "--top", "30", "--out", str(out))
    assert result.exit_code == 0, result.output
    header_lines = [[c.strip() for c in line.strip("┃ ").split("┃")] for line in result.output.splitlines()
                    if line.startswith("┃")]  # a narrow terminal wraps a header over two lines
    header = [" ".join(c for c in column if c) for column in zip(*header_lines)]
    assert header == [
        "fraction", "top edges", "kept |score|", "f |score|", "kept -score", "f -score"]
    rows = [[c.strip() for c in line.strip("│ ").split("│")] for line in result.output.splitlines()
            if line.startswith("│")]
    graph = files.load_graph(out)
    scores = graph.edge_scores()
    assert len(rows) == 10
    for fraction, top, by_abs, f_abs, by_signed, f_signed in rows:
        k = int(float(fraction) * 110)
        assert int(top) == k
        assert int(by_abs) == _pruned_top(scores, k, lambda e: abs(scores[e])), fraction
        assert int(by_signed) == _pruned_top(scores, k, lambda e: -scores[e]), fraction
    # the file: EAP-IG's keys as they were, and the |score| curve beside them, the table's numbers
    document = json.loads(out.read_text()) if suffix == ".json" else torch.load(out, weights_only=True)
    curve = document.pop("faithfulness")
    assert curve["ranking"] == "absolute" and curve["n_edges"] == [int(r[1]) for r in rows]
    assert curve["n_kept"] == [int(r[2]) for r in rows]
    assert [f"{f:.3f}" for f in curve["faithfulness"]] == [r[3] for r in rows]
    if suffix == ".json":
        assert document == files.to_document(graph)  # nothing else changed: EAP-IG's from_json reads cfg/nodes/edges
    else:
        assert sorted(document) == ["cfg", "dst_nodes", "edges_in_graph", "edges_scores", "nodes_in_graph", "src_nodes"]
