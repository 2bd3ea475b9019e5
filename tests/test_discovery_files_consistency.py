"""A circuit file whose records disagree is refused, naming the field: node flags against edge flags, in_graph at
cells that are no edge, minineo's optional keys ("faithfulness", "task") by the one reader for every consumer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minineo import views
from minineo.discovery import Graph, files
from minineo.errors import UserError

EAP_IG = Path(__file__).parent / "data" / "eap_ig" / "eap-ig-tiny-gpt2-ioi16-eap-top20"


def test_an_edge_in_while_its_node_is_out_is_refused_in_json(tmp_path):
    document = json.loads(EAP_IG.with_suffix(".json").read_text())
    files.from_document(document)  # EAP-IG's own file is consistent
    name = next(e for e, v in document["edges"].items() if v["in_graph"] and e.startswith("m0->"))
    document["nodes"]["m0"]["in_graph"] = False
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    n = sum(v["in_graph"] for e, v in document["edges"].items() if e.startswith("m0->") or "->m0" in e)
    with pytest.raises(UserError) as err:
        files.read_file(path)
    assert str(err.value) == (f"{path}: nodes marks node 'm0' out of the circuit (in_graph false), but {n} of its "
                              "edges, in and out, are in_graph true; the two records disagree: mark the node in, or "
                              "its edges out")
    with pytest.raises(UserError, match="nodes marks node 'm0' out"):
        views.circuit(path)  # the page's reader is the same reader


def test_pt_in_graph_at_cells_that_are_no_edge_or_against_its_nodes_is_refused(tmp_path):
    document = torch.load(EAP_IG.with_suffix(".pt"), weights_only=True)
    graph = Graph(2, 4, 128)
    path = tmp_path / "bad.pt"
    torch.save({**document, "edges_in_graph": torch.ones_like(document["edges_in_graph"])}, path)
    impossible = int((~graph.real_edges).sum())
    with pytest.raises(UserError) as err:
        files.read_file(path)
    assert str(err.value).startswith(f"{path}: edges_in_graph is true at {impossible} cells that are no edge (first: ")
    nodes = document["nodes_in_graph"].clone()
    out = int(nodes.nonzero()[1])  # a node in the (pruned) circuit other than input: it has edges in and out
    nodes[out] = False
    torch.save({**document, "nodes_in_graph": nodes}, path)
    with pytest.raises(UserError, match=rf"nodes_in_graph marks node '{graph.sender_names[out]}' out of the circuit"):
        files.read_file(path)
    torch.save({**document, "nodes_in_graph": nodes.int()}, path)
    with pytest.raises(UserError, match="nodes_in_graph must be a bool tensor"):
        files.read_file(path)


@pytest.mark.parametrize("key, value, said", [
    ("faithfulness", {"n_edges": [1, 2], "faithfulness": [0.5]}, "the optional \"faithfulness\" key must be"),
    ("faithfulness", {"n_edges": [1], "faithfulness": [0.5], "ranking": "best"}, "the optional \"faithfulness\" key"),
    ("faithfulness", "junk", "the optional \"faithfulness\" key must be"),
    ("task", {"name": "ioi"}, "the optional \"task\" key must be"),
])
def test_minineo_extra_keys_are_checked_by_the_one_reader(tmp_path, key, value, said):
    document = json.loads(EAP_IG.with_suffix(".json").read_text())
    path = tmp_path / "extra.json"
    path.write_text(json.dumps({**document, key: value}))
    for read in (files.read_file, files.load_graph, views.circuit):  # discover --from reads through read_file
        with pytest.raises(UserError, match=said):
            read(path)


def test_the_faithfulness_message_has_matched_braces(tmp_path):
    document = json.loads(EAP_IG.with_suffix(".json").read_text())
    path = tmp_path / "junk.json"
    path.write_text(json.dumps({**document, "faithfulness": 1}))
    with pytest.raises(UserError) as err:
        files.read_file(path)
    message = str(err.value)
    assert '{"n_edges": [k, ...], "faithfulness": [f, ...], "ranking": "absolute" or "signed"} with' in message
    assert message.count("{") == message.count("}") and message.count("[") == message.count("]")


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_page_name_is_refused(name):
    with pytest.raises(UserError, match=r"^name \(--name\) is '\s*', an empty model name for the page; give"):
        views.circuit(str(EAP_IG.with_suffix(".json")), name=name)


def test_the_curve_inset_labels_its_axis_as_drawn():
    """The inset draws x = log(1 + edges), where 0 edges sits at the left end; it is not labelled a log scale."""
    script = (Path(views.__file__).parent / "assets" / "circuit.js").read_text()
    assert "Math.log10(k + 1) / Math.log10(xmax + 1)" in script
    assert "edges (axis: log of 1 + edges)" in script and "(log scale)" not in script


def test_an_unpruned_top_n_file_is_consistent(tmp_path):
    """EAP-IG's apply_topn without prune leaves edges into nodes that send nothing (those nodes out): not refused."""
    from minineo.discovery import apply_topn

    graph = Graph(2, 4, 16)
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(0)) * graph.real_edges
    apply_topn(graph, 10, prune=False)
    dangling = graph.in_graph & ~graph.nodes_in_graph[:, None]
    assert bool(dangling.any())  # the case exists in this graph
    back = files.read_file(files.save_graph(graph, tmp_path / "c.json"))[0]
    assert torch.equal(back.in_graph, graph.in_graph)


def test_a_task_written_is_read_back(tmp_path):
    graph = files.load_graph(EAP_IG.with_suffix(".json"))
    task = files.task_document("ioi", 8, "0123456789abcdef", n=8, seed=0)
    for suffix in (".json", ".pt"):
        path = files.save_graph(graph, tmp_path / f"c{suffix}", computed_on=task)
        assert files.read_file(path)[1]["task"] == task
