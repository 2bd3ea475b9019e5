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


def test_the_unequal_length_message_quotes_each_prompt_whole_or_marks_the_cut(tmp_path):
    """Finding 19: "('When Emma and Paul went ... to / 'When Emma ... to)": the cut removed the closing quotes."""
    short = {"clean": "ab cd", "corrupted": "ab c", "answer": "x", "wrong": "y"}
    long = {"clean": "When Emma and Paul went to the store, Paul gave a drink to", "answer": " x", "wrong": " y",
            "corrupted": "When Emma and Paul went to the store, Dana gave the drinks and a book to"}
    for row, quoted in ((short, "('ab cd' / 'ab c')"),
                        (long, "('When Emma and Paul went to the store, Paul gave a drink to' / "
                               "'When Emma and Paul went to the store, Dana gave the drinks …')")):
        task = write_jsonl(tmp_path / "pairs.jsonl", [row])
        result = runner.invoke(app, ["discover", "--task", task, "--method", "eap", "--out", str(tmp_path / "c.json")],
                               terminal_width=300)
        assert result.exit_code == 1, result.output
        assert quoted in " ".join(result.output.split()), result.output


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
    (["--method", "eap-ig-inputs", "--ig-steps", "0"], "--ig-steps must be between 1 and 1000"),
    (["--method", "eap-ig-inputs", "--ig-steps", "1000000"], "--ig-steps must be between 1 and 1000"),  # ran 10 min
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


# Finding 4: every option that does not apply is refused, never ignored. The table is this test's own statement of
# docs/discovery.md and the help: which method each option is for (all others refuse it), and that --from runs none.
ALL_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact", "acdc")
OPTION_FOR = {  # option and a value: the methods it applies to
    ("--top", "5"): {"eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact"},
    ("--ig-steps", "3"): {"eap-ig-inputs", "eap-ig-activations"},
    ("--threshold", "0.1"): set(ALL_METHODS),
    ("--kl",): {"acdc"},
    ("--state", "s.json"): {"acdc"},
}
MODES = [("--method", m) for m in ALL_METHODS] + [("--from",)]  # --from: nothing runs, no method option applies


def _decide(tmp_path, *args):
    """Run discover with `args` and --batch-size 0, which fails its own check only once every option applies: an
    error naming --batch-size means accepted (and nothing ran), any other error means refused."""
    result = runner.invoke(app, ["discover", *args, "--batch-size", "0"], terminal_width=400)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return "accepted" if "--batch-size must be" in lines[0] else lines[0]


@pytest.fixture
def saved_circuit(tmp_path):
    path = tmp_path / "saved.json"
    files.save_graph(Graph.from_model(minineo.load("tiny-neo")), path)
    return str(path)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: " ".join(m))
@pytest.mark.parametrize("option", list(OPTION_FOR), ids=lambda o: o[0])
def test_every_option_is_refused_where_it_does_not_apply(tmp_path, saved_circuit, mode, option):
    where = ["--from", saved_circuit] if mode == ("--from",) else [*mode, "--out", str(tmp_path / "c.json")]
    decision = _decide(tmp_path, "--task", "induction", *where, *option)
    applies = mode != ("--from",) and mode[1] in OPTION_FOR[option]
    if applies:
        assert decision == "accepted", decision
    else:
        assert option[0] in decision and "drop" in decision, decision
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_is_refused_with_from(tmp_path, saved_circuit, method):
    decision = _decide(tmp_path, "--task", "induction", "--from", saved_circuit, "--method", method)
    assert "--method is for running a method" in decision and "--from" in decision


@pytest.mark.parametrize("mode", MODES, ids=lambda m: " ".join(m))
@pytest.mark.parametrize("option", [("--n", "8"), ("--seed", "1")], ids=lambda o: o[0])
@pytest.mark.parametrize("task", ["ioi", "induction", "jsonl"])
def test_n_and_seed_apply_to_the_built_in_tasks_only(tmp_path, saved_circuit, mode, option, task):
    """--task FILE.jsonl --n 8 used all 16 of the file's pairs."""
    task = str(DATA / "tiny-gpt2-ioi16.jsonl") if task == "jsonl" else task
    where = ["--from", saved_circuit] if mode == ("--from",) else [*mode, "--out", str(tmp_path / "c.json")]
    decision = _decide(tmp_path, "--task", task, *where, *option)
    if task.endswith(".jsonl"):
        assert f"{option[0]} is for the built-in tasks" in decision and "drop it" in decision, decision
    else:
        assert decision == "accepted", decision


@pytest.mark.parametrize("method", ALL_METHODS[:5])
def test_top_and_threshold_together_are_refused(tmp_path, method):
    decision = _decide(tmp_path, "--method", method, "--out", str(tmp_path / "c.json"), "--top", "5", "--threshold",
                       "0.1")
    assert "--top and --threshold both choose" in decision


# Finding 3: EAP-IG's own files name no model; with --from they cannot be checked, so the user must say the model.
EAP_FILE = DATA / "eap-ig-tiny-gpt2-ioi16-eap.json"


@pytest.mark.parametrize("path", [EAP_FILE, EAP_FILE.with_suffix(".pt")], ids=["json", "pt"])
def test_a_file_without_model_identity_needs_the_model_named(tmp_path, path):
    copy = tmp_path / "copy.json"
    result = runner.invoke(app, ["discover", "--from", str(path), "--task", "ioi", "--n", "4", "--out", str(copy)],
                           terminal_width=400)
    assert result.exit_code == 1 and not copy.exists(), result.output
    assert "carries no model identity" in result.output and "--model" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["discover", "--model", "tiny-gpt2", "--from", str(path), "--task", "ioi", "--n",
                                 "4", "--out", str(copy)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "carries no model identity" in result.output
    cfg = json.loads(copy.read_text())["cfg"]
    assert cfg["model"] == "tiny-gpt2" and cfg["model_asserted"] is True
    back = files.load_graph(copy, minineo.load("tiny-gpt2"))
    assert back.model == "tiny-gpt2" and back.model_asserted


def test_a_file_minineo_wrote_needs_no_model_named_and_is_not_marked_asserted(tmp_path):
    from minineo.discovery import circuits

    written = tmp_path / "neo.json"
    graph = Graph.from_model(minineo.load("tiny-neo"))
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(0)) * graph.real_edges
    files.save_graph(circuits.apply_topn(graph, 10, absolute=True, prune=False), written)
    copy = tmp_path / "copy.json"
    result = invoke("discover", "--from", str(written), "--task", "induction", "--n", "2", "--out", str(copy))
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert "model_asserted" not in json.loads(copy.read_text())["cfg"]


@pytest.mark.parametrize("read", [files.load_graph, files.from_json, files.from_pt])
def test_the_api_reads_a_file_without_identity_by_shape_leaves_model_none_and_says_so(read):
    from minineo import report

    path = EAP_FILE if read is not files.from_pt else EAP_FILE.with_suffix(".pt")
    neo = minineo.load("tiny-neo")
    with report.collect() as said:
        graph = read(path, neo)
    assert graph.model is None and not graph.model_asserted
    assert len(said) == 1 and "carries no model identity" in said[0] and "by shape only" in said[0]
    with report.collect() as said:
        assert read(path).model is None  # nothing to check against: nothing to say
    assert said == []


def test_many_ig_steps_say_their_cost_on_stderr_before_the_run(tmp_path):
    """Finding 17: outside a terminal (here) a long run showed nothing; past 100 steps the cost is said first."""
    result = runner.invoke(app, ["discover", "--model", "tiny-gpt2", "--task", "induction", "--n", "2", "--method",
                                 "eap-ig-inputs", "--ig-steps", "120", "--out", str(tmp_path / "c.json")],
                           terminal_width=400)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("warning: eap-ig-inputs with ig_steps=120 on 2 pairs costs about 120 forward and "
                            "backward passes"), result.output


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
    task = document.pop("task")  # what the scores were computed on, another extra key EAP-IG ignores
    assert task["n_pairs"] == 8 and set(task) >= {"name", "pairs"}
    assert curve["ranking"] == "absolute" and curve["n_edges"] == [int(r[1]) for r in rows]
    assert curve["n_kept"] == [int(r[2]) for r in rows]
    assert [f"{f:.3f}" for f in curve["faithfulness"]] == [r[3] for r in rows]
    if suffix == ".json":
        # nothing else changed: EAP-IG's from_json reads cfg/nodes/edges (to_document writes graph.extras back too)
        assert document == {k: v for k, v in files.to_document(graph).items() if k not in ("faithfulness", "task")}
    else:
        assert sorted(document) == ["cfg", "dst_nodes", "edges_in_graph", "edges_scores", "nodes_in_graph", "src_nodes"]
