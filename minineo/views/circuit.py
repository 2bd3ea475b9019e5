"""The circuit view: an EAP-IG graph file (or dict) as a layered graph, one HTML page.

Rows are layers (input at the bottom, logits on top, as the PNG of `discover --plot` draws them); nodes are `input`,
the heads `a{l}.h{h}`, the MLPs `m{l}` and `logits`; an edge into a head ends on its q, k or v port (marked on the node). Edge width and colour follow the
score (blue negative, red positive, as `minineo discover --plot` draws them); the page says what a score is and which
colour marks an edge the circuit needs, from the method and unit the file's "task" records (`score_key`).
The page opens on the file's own circuit (exactly its in_graph edges) when it has one; a slider keeps the top N
edges by |score| (EAP-IG's `apply_topn(N, absolute=True)`, without pruning) and shows the faithfulness measured at that size when the file has a curve;
clicking a node highlights its edges and lists them with their scores. At most `MAX_DRAWN` edges are drawn (the
largest); the page says so when more are kept.

The file format is EAP-IG's `Graph.to_json` (or its `.pt`, `to_pt`) (/work/shared/discovery/README.md): `{"cfg": {"n_layers", "n_heads",
...}, "nodes": {name: {"in_graph"}}, "edges": {"sender->receiver": {"score", "in_graph"}}}`. Optional keys, which
EAP-IG ignores when it reads the file (docs/views.md):

- `"faithfulness": {"n_edges": [k, ...], "faithfulness": [f, ...], "ranking": "absolute" | "signed"}`: the
  normalised faithfulness f of the top-k circuit for each size k (the curve of MIB's CPR / CMD);
- `"task"`: what the scores were computed on (`minineo discover` writes it: files.task_document);
- `"model"`: the model's name, shown on the page; `"data"`: a note on what the scores were computed on.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minineo import checks, report
from minineo.discovery import files
from minineo.discovery.graph import Graph, check_finite_scores
from minineo.errors import UserError
from minineo.views.page import View, asset, pack_float32, pack_uint16, render

MAX_DRAWN = 3000
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


def _read(graph: str | Path | dict | Graph) -> tuple[Graph, dict, str]:
    """(the graph, the source's other top-level keys, the source's name), checked by the discovery file reader
    (minineo.discovery.files: one check of EAP-IG's names, edge set and cfg for files, dicts and `.pt` alike)."""
    if isinstance(graph, Graph):  # what minineo.discovery returned, drawn without a file in between
        check_finite_scores(graph, "views.circuit")  # (a file's reader refuses them already)
        return graph, dict(graph.extras), "the graph"  # what its file recorded (task, faithfulness), if it was read
    if isinstance(graph, dict):
        extras = {k: v for k, v in graph.items() if k not in files.EAP_IG_JSON_KEYS}
        return files.from_document(graph, "the graph"), extras, "the graph"
    if not isinstance(graph, (str, Path)):
        raise UserError(f"graph must be a path to an EAP-IG graph file (.json or .pt), its dict, or a "
                        f"minineo.discovery Graph; got {type(graph).__name__}")
    path = checks.existing_path(Path(graph).expanduser(), "graph", kind="file",
                                fix="give the .json or .pt that EAP-IG's Graph.to_json / to_pt (or `minineo discover "
                                    "--out`) wrote")
    found, extras = files.read_file(path)
    return found, extras, str(path)


def _faithfulness(raw: Any, source: str) -> dict | None:
    """The optional curve, checked by the discovery file reader's check (files.check_extras), sorted by size."""
    if raw is None:
        return None
    files.check_extras({"faithfulness": raw}, source)
    sizes, values = raw["n_edges"], raw["faithfulness"]
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    return {"n_edges": [int(sizes[i]) for i in order], "faithfulness": [float(values[i]) for i in order],
            "ranking": str(raw.get("ranking", "absolute"))}


@checks.typed
def circuit(graph: str | Path | dict | Graph, *, name: str | None = None, max_drawn: int = MAX_DRAWN) -> View:
    """The circuit page of an EAP-IG graph: a minineo.discovery Graph, a path to its file (`.json` or `.pt`, as
    `to_json` / `to_pt` or `minineo discover --out` write them) or the parsed JSON dict.

    The graph is checked by the discovery file reader (minineo.discovery.files.from_document / read_file): every
    edge of EAP-IG's edge set for the cfg's shape, no other, a finite score each, a model identity that is a string.
    `name` labels the model (default: the file's optional "model" key, else cfg's model, else its shape; an empty
    or blank name is a UserError). Raises
    MissingFileError for a missing file and UserError for a file that is not an EAP-IG graph (naming the first bad
    edge or key).
    """
    if name is not None and not isinstance(name, str):
        raise UserError(f"name must be a str (or None), got {type(name).__name__}")
    if name is not None and not name.strip():
        raise UserError(f"name (--name) is {name!r}, an empty model name for the page; give the model's name (e.g. "
                        "--name tiny-gpt2), or leave it out to use the file's")
    found, extras, source = _read(graph)
    n_layers, n_heads = found.n_layers, found.n_heads
    checks.count(max_drawn, "max_drawn", fix=f"default {MAX_DRAWN}")
    names = node_names(n_layers, n_heads)
    index = {n: i for i, n in enumerate(names)}
    senders, receivers, ports, rows, columns = [], [], [], [], []
    for edge, s, r in found.edges():  # EAP-IG's order; the names were checked by the reader
        sender, _, receiver = edge.partition("->")
        port = PORTS[receiver[-2]] if receiver.endswith(">") else 3
        senders.append(index[sender]); receivers.append(index[receiver[:-3] if port < 3 else receiver])
        ports.append(port); rows.append(s); columns.append(r)
    score_t = found.scores[rows, columns].to(torch.float64)
    in_graph = found.in_graph[rows, columns]
    if not bool(in_graph.any()):  # nothing to open on: the page opens on the top N by |score| instead, and says so
        report.warn(f"{source} marks no edge in_graph (an empty circuit), so the page opens on the top "
                    f"{min(50, len(rows))} edges by |score| instead of the file's circuit")
    order = torch.argsort(score_t.abs(), descending=True, stable=True)  # the slider's top N is a prefix
    faith = _faithfulness(extras.get("faithfulness"), source)
    label = extras.get("model")
    if label is not None and not isinstance(label, str):
        raise UserError(f"{source}: the optional \"model\" key must be the model's name as a string, got {label!r}")
    recorded = label or (files.model_identity(found.model) if found.model else None)
    if name is not None and recorded is not None and name != recorded:
        report.warn(f"the page calls the model {name!r} (--name), but {source} records {recorded!r}: the scores are "
                    f"{recorded!r}'s; leave --name out to label the page with the file's model")
    model = name or recorded or f"{n_layers}-layer x {n_heads}-head model"
    data_note = extras.get("data")
    payload = {
        "n_layers": n_layers, "n_heads": n_heads, "nodes": names, "n_edges_full": edge_count(n_layers, n_heads),
        "senders": pack_uint16(torch.tensor(senders)[order]), "receivers": pack_uint16(torch.tensor(receivers)[order]),
        "ports": pack_uint16(torch.tensor(ports)[order]), "scores": pack_float32(score_t[order]),
        "in_graph": torch.nonzero(in_graph[order]).flatten().tolist(), "max_drawn": max_drawn,
        "faithfulness": faith, "source": Path(source).name if source != "the graph" else None,
        "data_note": data_note if isinstance(data_note, str) else None,
    }
    key = score_key(extras.get("task"))
    body = (BODY.replace("__SCORES__", html.escape(key.sentence))
            .replace("__COLOURS__", html.escape(f"{key.negative}; {key.positive}")))
    page = render("circuit", "Circuit", str(model), None, payload, body, asset("circuit.js"))
    return View(page, "circuit", height=820)


# how each scoring method gets EAP-IG's noising form (minineo.discovery.attribution; docs/discovery.md)
HOW = {"eap": "estimated from one gradient on the clean run",
       "eap-ig-inputs": "estimated from gradients averaged along a path from the corrupted to the clean input",
       "eap-ig-activations": "estimated from gradients averaged along a path from the corrupted to the clean "
                             "activations",
       "clean-corrupted": "estimated from the clean and the corrupted run's gradients",
       "exact": "measured exactly, one patched run per edge"}
NOISING = "EAP-IG's noising form, the change in the metric when that edge alone is corrupted"
UNREACHED = "an edge into a node that no longer reaches the logits scores 0 exactly, without a forward pass"


@dataclass(frozen=True)
class ScoreKey:
    """What a circuit file's scores are, in words, from the "task" minineo recorded in it (its method and
    score_unit; EAP-IG's own files record none): the sentence saying what a score is, and what blue (score < 0) and
    red (score > 0) mean, naming which of them marks an edge the circuit needs. The page and `discover --plot` both
    say these."""

    sentence: str
    negative: str
    positive: str


def score_key(task: Any) -> ScoreKey:
    """The ScoreKey of a file whose "task" key is `task` (None or not a dict: a file that records none)."""
    task = task if isinstance(task, dict) else {}
    method = task.get("method") if isinstance(task.get("method"), str) else None
    unit = task.get("score_unit") if isinstance(task.get("score_unit"), str) else None
    kl = unit == files.KL_UNIT
    if method == "acdc":
        sentence = (f"Scores are ACDC's (method acdc{', with --kl' if kl else ''}): the change in "
                    + ("the KL divergence from the clean run, KL(circuit without the edge) - KL(circuit)," if kl else
                       "the metric, m(circuit without the edge) - m(circuit),")
                    + f" when ACDC visited the edge; {UNREACHED}")
    elif method in HOW:
        sentence = f"Scores are by method {method}, {HOW[method]}: {NOISING}"
    else:
        sentence = ("Scores are EAP-IG's noising form: the change in the metric when that edge alone is corrupted "
                    "(estimated; exact for the exact method)")
    if unit:  # ACDC's KL scores: the sentence has said what they are a change of
        sentence += f"; in {'nats' if kl and method == 'acdc' else unit}."
    else:
        sentence += "."
    if kl:
        quantity, needs_negative = "the KL divergence from the clean run", False  # removing a needed edge raises it
    elif unit == "logit difference":
        quantity, needs_negative = "the logit difference", True  # removing a needed edge lowers it
    else:  # a metric the file does not name: which sign is needed depends on it
        quantity, needs_negative = "the metric", None
    needed = ": an edge the circuit needs"
    return ScoreKey(sentence,
                    f"blue: score < 0, removing the edge lowers {quantity}" + needed * (needs_negative is True),
                    f"red: score > 0, removing the edge raises {quantity}" + needed * (needs_negative is False))


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
<p class="note" id="key">Rows are layers (input at the bottom, logits on top). Edge width follows |score|, colour its
sign (<span id="colours">__COLOURS__</span>). An edge into a head ends on the head's q, k or v port.
<span id="scores">__SCORES__</span></p>
"""
