"""EAP-IG's graph files: read the files EAP-IG itself wrote, write them back identically, refuse another model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import minineo
from minineo.discovery import Graph, files
from minineo.errors import MissingFileError, UserError

DATA = Path(__file__).parent / "data" / "eap_ig"
STEMS = ("eap-ig-tiny-gpt2-ioi16-eap", "eap-ig-tiny-gpt2-ioi16-eap-top20")


@pytest.mark.parametrize("stem", STEMS)
def test_json_round_trip_is_byte_identical_to_eap_igs_file(stem, tmp_path):
    original = DATA / f"{stem}.json"
    graph = files.from_json(original)
    assert graph.model is None  # EAP-IG's files carry no identity, so none is written back
    written = files.to_json(graph, tmp_path / "back.json")
    assert written.read_bytes() == original.read_bytes()


@pytest.mark.parametrize("stem", STEMS)
def test_pt_round_trip_is_tensor_equal_to_eap_igs_file(stem, tmp_path):
    original = torch.load(DATA / f"{stem}.pt")
    graph = files.from_pt(DATA / f"{stem}.pt")
    back = torch.load(files.to_pt(graph, tmp_path / "back.pt"))
    assert back.keys() == original.keys()
    assert back["cfg"] == original["cfg"]
    assert back["src_nodes"] == original["src_nodes"] and back["dst_nodes"] == original["dst_nodes"]
    for key in ("edges_scores", "edges_in_graph", "nodes_in_graph"):
        assert back[key].dtype == original[key].dtype
        assert torch.equal(back[key], original[key]), key


@pytest.mark.parametrize("stem", STEMS)
def test_json_and_pt_of_one_graph_agree(stem):
    a, b = files.from_json(DATA / f"{stem}.json"), files.from_pt(DATA / f"{stem}.pt")
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.in_graph, b.in_graph) and torch.equal(a.nodes_in_graph, b.nodes_in_graph)


def test_top20_file_is_18_edges_and_7_nodes_as_eap_ig_wrote():
    raw = json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap-top20.json").read_text())
    graph = files.load_graph(DATA / "eap-ig-tiny-gpt2-ioi16-eap-top20.json")
    assert graph.n_edges_in_graph == sum(e["in_graph"] for e in raw["edges"].values()) == 18
    in_nodes = {n for n, v in raw["nodes"].items() if v["in_graph"] and n != "logits"}
    assert {graph.sender_names[i] for i in graph.nodes_in_graph.nonzero().flatten().tolist()} == in_nodes
    assert int(graph.nodes_in_graph.sum()) == len(in_nodes) == 7  # EAP-IG's count_included_nodes: logits not counted
    for name, edge in raw["edges"].items():
        assert graph.score(name) == pytest.approx(edge["score"], rel=0, abs=0)


def test_model_identity_is_written_inside_cfg_and_read_back(tmp_path):
    model = minineo.load("tiny-gpt2")
    graph = Graph.from_model(model)
    graph.scores[graph.real_edges] = torch.linspace(-1, 1, graph.n_edges)
    for suffix in (".json", ".pt"):
        path = files.save_graph(graph, tmp_path / f"c{suffix}")
        cfg = json.loads(path.read_text())["cfg"] if suffix == ".json" else torch.load(path)["cfg"]
        assert cfg["model"] == "tiny-gpt2"
        # the four keys EAP-IG's Graph.from_model reads are unchanged beside it
        assert {k: cfg[k] for k in ("n_layers", "n_heads", "parallel_attn_mlp", "d_model")} == \
            {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 128}
        back = files.load_graph(path, model)
        assert back.model == "tiny-gpt2" and torch.equal(back.scores, graph.scores)


def test_a_circuit_for_another_model_is_refused_naming_both(tmp_path):
    neo, gpt2 = minineo.load("tiny-neo"), minineo.load("tiny-gpt2")
    path = files.save_graph(Graph.from_model(gpt2), tmp_path / "c.json")
    # same shape (2 x 4 x 128), different names: refused because both are known
    with pytest.raises(UserError, match=r"another model \('tiny-gpt2'.*this one \('tiny-neo'"):
        files.load_graph(path, neo)
    # EAP-IG's own file has no name: the shape decides, and it fits
    files.load_graph(DATA / "eap-ig-tiny-gpt2-ioi16-eap.json", neo)
    # a shape mismatch is always refused
    with pytest.raises(UserError, match=r"2 layers x 4 heads.*3 layers x 4 heads"):
        files.load_graph(DATA / "eap-ig-tiny-gpt2-ioi16-eap.pt", Graph(3, 4, 128))


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(MissingFileError, match=r"^path .*none\.json does not exist; give the path of an EAP-IG graph"):
        files.load_graph(tmp_path / "none.json")
    with pytest.raises(UserError, match="not 'txt'|'.txt'"):
        files.save_graph(Graph(1, 1, 4), tmp_path / "c.txt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not a JSON file"):
        files.load_graph(tmp_path / "bad.json")
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(UserError, match="not a torch file"):
        files.load_graph(tmp_path / "bad.pt")
    raw = json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    raw["edges"]["a1.h0->a0.h1<q>"] = {"score": 1.0, "in_graph": True}  # backwards in time: no such edge
    (tmp_path / "edge.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="is not an edge"):
        files.load_graph(tmp_path / "edge.json")
    raw = json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    raw["cfg"]["parallel_attn_mlp"] = True
    (tmp_path / "par.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="parallel"):
        files.load_graph(tmp_path / "par.json")
