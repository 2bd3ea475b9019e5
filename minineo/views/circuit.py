"""The circuit view: an EAP-IG graph file (or dict) as a layered graph, one HTML page.

Rows are layers (input at the top, logits at the bottom); nodes are `input`, the heads `a{l}.h{h}`, the MLPs `m{l}`
and `logits`; an edge into a head ends on its q, k or v port (marked on the node). Edge width and colour follow the
score (blue negative: removing the edge lowers the metric; red positive; as `minineo discover --plot` draws them).
A slider keeps the top N edges by |score| (EAP-IG's `apply_topn(N, absolute=True)`, without pruning) and shows the faithfulness measured at that size when the file has a curve;
clicking a node highlights its edges and lists them with their scores. At most `MAX_DRAWN` edges are drawn (the
largest); the page says so when more are kept.

The file format is EAP-IG's `Graph.to_json` (/work/shared/discovery/README.md): `{"cfg": {"n_layers", "n_heads",
...}, "nodes": {name: {"in_graph"}}, "edges": {"sender->receiver": {"score", "in_graph"}}}`. Optional keys, which
EAP-IG ignores when it reads the file (docs/views.md):

- `"faithfulness": {"n_edges": [k, ...], "faithfulness": [f, ...], "ranking": "absolute" | "signed"}`: the
  normalised faithfulness f of the top-k circuit for each size k (the curve of MIB's CPR / CMD);
- `"model"`: the model's name, shown on the page; `"data"`: what the scores were computed on.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from minineo import checks
from minineo.discovery.files import to_document
from minineo.discovery.graph import Graph
from minineo.errors import MissingFileError, UserError
from minineo.views.page import View, asset, pack_float32, pack_uint16, render

MAX_DRAWN = 3000
SENDER = re.compile(r"^(input|a(\d+)\.h(\d+)|m(\d+))$")
RECEIVER = re.compile(r"^(logits|a(\d+)\.h(\d+)<([qkv])>|m(\d+))$")
PORTS = {"q": 0, "k": 1, "v": 2}


def edge_count(n_layers: int, n_heads: int) -> int:
    """EAP-IG's edge count for L layers of H heads: (3H+1)(L + (H+1)L(L-1)/2) + LH + 1 + L(H+1) (32,491 at 12 x 12)."""
    L, H = n_layers, n_heads
    return (3 * H + 1) * (L + (H + 1) * L * (L - 1) // 2) + L * H + 1 + L * (H + 1)


def node_names(n_layers: int, n_heads: int) -> list[str]:
    """input, then per layer its heads and its MLP, then logits (EAP-IG's node order)."""
    names = ["input"]
    for layer in range(n_layers):
        names += [f"a{layer}.h{head}" for head in range(n_heads)] + [f"m{layer}"]
    return names + ["logits"]


def _layer_of_sender(match: re.Match) -> int:
    """-1 for input, the layer of a head or an MLP."""
    if match.group(1) == "input":
        return -1
    return int(match.group(2) if match.group(2) is not None else match.group(4))


def _parse_edge(name: str, n_layers: int, n_heads: int, source: str) -> tuple[str, str, int]:
    """(sender node, receiver node, port: 0 q, 1 k, 2 v, 3 none) of an EAP-IG edge name; a UserError otherwise."""
    sender, arrow, receiver = name.partition("->")
    s, r = SENDER.match(sender), RECEIVER.match(receiver)
    if not arrow or s is None or r is None:
        raise UserError(f"{source}: the edge {name!r} is not an EAP-IG edge name ('input->a0.h1<q>', 'a0.h1->m0', "
                        "'m1->logits'); give a graph written by EAP-IG's to_json or minineo's discovery")
    s_layer = _layer_of_sender(s)
    s_head = int(s.group(3)) if s.group(3) is not None else None
    if r.group(1) == "logits":
        r_layer, r_head, port, r_name = n_layers, None, 3, "logits"
    elif r.group(2) is not None:
        r_layer, r_head, port = int(r.group(2)), int(r.group(3)), PORTS[r.group(4)]
        r_name = f"a{r_layer}.h{r_head}"
    else:
        r_layer, r_head, port, r_name = int(r.group(5)), None, 3, f"m{r.group(5)}"
    for layer, head in ((s_layer, s_head), (r_layer, r_head)):
        if layer >= n_layers + (1 if head is None else 0) or (head is not None and head >= n_heads):
            raise UserError(f"{source}: the edge {name!r} names a node outside the graph's cfg ({n_layers} layers "
                            f"of {n_heads} heads); the file's cfg and edges disagree")
    same_layer_ok = r_name.startswith("m") and s_head is not None  # MLP l reads the heads of its own layer
    if not (s_layer < r_layer or (s_layer == r_layer and same_layer_ok)):
        raise UserError(f"{source}: the edge {name!r} goes from layer {s_layer} to layer {r_layer}, which no "
                        "EAP-IG graph has (a sender must come before its receiver)")
    return sender, r_name, port


def _read(graph: str | Path | dict | Graph) -> tuple[dict, str]:
    if isinstance(graph, dict):
        return graph, "the graph"
    if isinstance(graph, Graph):  # what minineo.discovery returned, drawn without a file in between
        return to_document(graph), "the graph"
    if not isinstance(graph, (str, Path)):
        raise UserError(f"graph must be a path to an EAP-IG JSON file or its dict, got {type(graph).__name__}")
    path = Path(graph).expanduser()
    if not path.is_file():
        raise MissingFileError(f"graph file {path} does not exist or is not a file; give the JSON that EAP-IG's "
                               "Graph.to_json (or `minineo discover`) wrote")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"graph file {path} is not valid JSON ({err}); give an EAP-IG graph JSON file") from None


def _faithfulness(raw: Any, source: str) -> dict | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and isinstance(raw.get("n_edges"), list) and isinstance(raw.get("faithfulness"), list)
    if ok:
        sizes, values = raw["n_edges"], raw["faithfulness"]
        ok = (len(sizes) == len(values) and len(sizes) > 0
              and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in sizes)
              and all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in values))
    if not ok:
        raise UserError(f"{source}: the optional \"faithfulness\" key must be {{\"n_edges\": [k, ...], "
                        "\"faithfulness\": [f, ...]}} with as many finite values as sizes; fix or remove it")
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    return {"n_edges": [sizes[i] for i in order], "faithfulness": [float(values[i]) for i in order],
            "ranking": str(raw.get("ranking", "absolute"))}


@checks.typed
def circuit(graph: str | Path | dict | Graph, *, name: str | None = None, max_drawn: int = MAX_DRAWN) -> View:
    """The circuit page of an EAP-IG graph: a minineo.discovery Graph, a path to its JSON (`to_json`) or the parsed dict.

    Every edge name is checked against the file's cfg (EAP-IG's naming and edge set); `name` labels the model
    (default: the file's optional "model" key, else its shape). Raises MissingFileError for a missing file and
    UserError for a file that is not an EAP-IG graph (naming the first bad edge or key).
    """
    if name is not None and not isinstance(name, str):
        raise UserError(f"name must be a str (or None), got {type(name).__name__}")
    data, source = _read(graph)
    if not isinstance(data, dict) or not isinstance(data.get("cfg"), dict) or not isinstance(data.get("edges"), dict):
        raise UserError(f"{source} is not an EAP-IG graph: it needs the keys \"cfg\" (n_layers, n_heads) and "
                        "\"edges\" ({name: {score, in_graph}})")
    cfg = data["cfg"]
    n_layers, n_heads = cfg.get("n_layers"), cfg.get("n_heads")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in (n_layers, n_heads)):
        raise UserError(f"{source}: cfg needs positive integers n_layers and n_heads, got {n_layers!r} and {n_heads!r}")
    if cfg.get("parallel_attn_mlp"):
        raise UserError(f"{source}: parallel_attn_mlp graphs (GPT-J style) are not drawn; GPT-2 and GPT-Neo have "
                        "sequential attention and MLP")
    checks.count(max_drawn, "max_drawn", fix=f"default {MAX_DRAWN}")
    names = node_names(n_layers, n_heads)
    index = {n: i for i, n in enumerate(names)}
    senders, receivers, ports, scores, in_graph, edge_names = [], [], [], [], [], []
    for edge, value in data["edges"].items():
        sender, receiver, port = _parse_edge(edge, n_layers, n_heads, source)
        score = value.get("score") if isinstance(value, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise UserError(f"{source}: the edge {edge!r} has the score {score!r}; every edge needs a finite number")
        senders.append(index[sender]); receivers.append(index[receiver]); ports.append(port)
        scores.append(float(score)); in_graph.append(bool(value.get("in_graph", False))); edge_names.append(edge)
    if not scores:
        raise UserError(f"{source} has no edges; give a graph with scored edges")
    score_t = torch.tensor(scores, dtype=torch.float64)
    order = torch.argsort(score_t.abs(), descending=True, stable=True)  # the slider's top N is a prefix
    total = edge_count(n_layers, n_heads)
    faith = _faithfulness(data.get("faithfulness"), source)
    cfg_model = data.get("cfg", {}).get("model") if isinstance(data.get("cfg"), dict) else None  # minineo's files
    model = name or data.get("model") or cfg_model or f"{n_layers}-layer x {n_heads}-head model"
    payload = {
        "n_layers": n_layers, "n_heads": n_heads, "nodes": names, "n_edges_full": total,
        "senders": pack_uint16(torch.tensor(senders)[order]), "receivers": pack_uint16(torch.tensor(receivers)[order]),
        "ports": pack_uint16(torch.tensor(ports)[order]), "scores": pack_float32(score_t[order]),
        "in_graph": [i for i, k in enumerate(order.tolist()) if in_graph[k]], "max_drawn": max_drawn,
        "faithfulness": faith, "source": Path(source).name if source != "the graph" else None,
        "data_note": data.get("data") if isinstance(data.get("data"), str) else None,
    }
    page = render("circuit", "Circuit", str(model), None, payload, BODY, asset("circuit.js"))
    return View(page, "circuit", height=820)


BODY = """
<div class="note" id="source"></div>
<div class="controls"><label for="keep">edges kept (top N by |score|):</label>
  <input type="range" id="keep" min="0" value="0" style="width:420px">
  <input type="number" id="keep-number" min="0" style="width:80px">
  <button id="file-circuit" hidden></button></div>
<div class="note" id="status"></div>
<div class="row"><div class="note" id="faith"></div>
  <svg id="curve" width="260" height="90" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div class="row">
  <div><svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg></div>
  <div class="edge-list"><h2 id="list-title">click a node</h2><div id="edge-list"></div></div>
</div>
<p class="note">Rows are layers (input at the top, logits at the bottom). Edge width follows |score|, colour its sign
(blue negative: removing the edge lowers the metric; red positive). An edge into a head ends on the head's q, k or v port. Scores are EAP-IG's noising
form: the change in the metric when that edge alone is corrupted (estimated).</p>
"""
