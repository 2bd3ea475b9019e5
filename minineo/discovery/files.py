"""EAP-IG's graph files, JSON and `.pt`, read and written exactly as EAP-IG does (hannamw/EAP-IG, `Graph.to_json` /
`from_json` / `to_pt` / `from_pt`), so a circuit found here loads in EAP-IG and the MIB circuit track, and back.

JSON: `{"cfg": {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"}, "nodes": {name: {"in_graph": bool}},
"edges": {name: {"score": float, "in_graph": bool}}}` in EAP-IG's node and edge order, written with `json.dump`'s
default separators (`logits` is written, always in the graph, and ignored on reading, as EAP-IG does).
`.pt`: a `torch.save` dict with `cfg`, `src_nodes`, `dst_nodes`, `edges_scores` (senders, receivers) float32,
`edges_in_graph` (senders, receivers) bool, `nodes_in_graph` (senders,) bool.

The model's identity (`Graph.model`, e.g. "tiny-gpt2" or a hub id) is written as an extra key `"model"` inside `cfg`
when known. EAP-IG ignores it: its `from_json` / `from_pt` pass `cfg` to `Graph.from_model`, which copies the dict into
its GraphConfig and reads only n_layers, n_heads, parallel_attn_mlp and d_model, and its `to_json` / `to_pt` write
`dict(cfg)` back, so the identity survives a round trip through EAP-IG. A file without it (EAP-IG's own) is
written back byte for byte.

minineo's other extra keys are top-level ("task": what the scores were computed on, their method and unit;
"faithfulness": the curve); EAP-IG's readers ignore them. The readers put every such key on `Graph.extras` and the
writers write it back, so a file read and written again says the same about its scores (a graph given new scores
has none: see Graph).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

import torch

from minineo import checks, outputs, report
from minineo.checkpoints.hub import EMBEDDED
from minineo.discovery.graph import Graph, check_finite_scores
from minineo.errors import UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.discovery.faithfulness import FaithfulnessCurve
    from minineo.forward.model import Model

SUFFIXES = (".json", ".pt")

# the units a circuit file's optional "task" record gives its scores in (task["score_unit"], written by discover)
LOGIT_UNIT, KL_UNIT = "logit difference", "KL divergence from the clean run, nats"


def model_identity(source: str | None) -> str | None:
    """The model's name in a circuit file, from where `minineo.load` found it: an embedded model's name
    ("tiny-gpt2"), a hub id ("gpt2", "EleutherAI/gpt-neo-125M") for a hub cache snapshot
    (`models--org--name/snapshots/...`), else the folder as given. A name (not a path) passes unchanged."""
    if source is None:
        return None
    path = Path(source)
    for name, folder in EMBEDDED.items():
        if path == folder:
            return name
    for part in path.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return source


def _cfg(graph: Graph) -> dict[str, Any]:
    cfg: dict[str, Any] = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": False,
                           "d_model": graph.d_model}
    if graph.model is not None:
        cfg["model"] = model_identity(graph.model)
        if graph.model_asserted:
            cfg["model_asserted"] = True  # named by the user for a file that carried no identity: not checked
    return cfg


def _write_atomic(path: Path, write) -> None:
    """Write through minineo.outputs (a claim on `path`, a temporary file beside it renamed onto it with the
    normal umask mode): a crash never leaves half a file, and two writers never replace each other's."""
    with outputs.replacing(path, "the circuit file") as temp:
        write(str(temp))


def curve_document(curve: FaithfulnessCurve | None) -> dict[str, Any] | None:
    """The optional top-level `"faithfulness"` key minineo writes beside EAP-IG's keys (EAP-IG's from_json and
    from_pt read only theirs, so the file still loads there): the curve's sizes k (top-k edges, before pruning),
    f at each, the ranking ("absolute": by |score|; "signed": by -score), the edges kept after pruning and the edge
    fractions. minineo.views.circuit draws it."""
    if curve is None:
        return None
    # by its fields, not isinstance: faithfulness.py imports the patched forward, which imports this module
    if not all(hasattr(curve, k) for k in ("n_edges", "faithfulness", "absolute", "n_kept", "fractions")):
        raise WrongTypeError(f"curve must be a minineo.discovery FaithfulnessCurve (faithfulness_curve(...)) or None, "
                             f"got {checks.describe(curve)}")
    return {"n_edges": list(curve.n_edges), "faithfulness": [float(f) for f in curve.faithfulness],
            "ranking": "absolute" if curve.absolute else "signed", "n_kept": list(curve.n_kept),
            "fractions": [float(p) for p in curve.fractions]}


def to_document(graph: Graph, curve: FaithfulnessCurve | None = None,
                computed_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict EAP-IG's JSON file holds for `graph` (what to_json writes; what minineo.views.circuit reads), with
    `curve` as the extra key "faithfulness" when given (see `curve_document`) and `computed_on` as the extra key "task"
    (see `task_document`). UserError for a NaN or infinite edge score (naming the edge): JSON has no such number, and
    every reader, EAP-IG's and minineo's, refuses it."""
    check_finite_scores(graph, "to_document")
    nodes = {name: {"in_graph": bool(graph.nodes_in_graph[i])} for i, name in enumerate(graph.sender_names)}
    nodes["logits"] = {"in_graph": True}
    # float(float32) is the value EAP-IG's `edge.score.item()` gives, so json writes the same digits
    edges = {name: {"score": float(graph.scores[s, r]), "in_graph": bool(graph.in_graph[s, r])}
             for name, s, r in graph.edges()}
    document = {"cfg": _cfg(graph), "nodes": nodes, "edges": edges}
    document.update(extras_document(graph, curve, computed_on, EAP_IG_JSON_KEYS))
    return document


def extras_document(graph: Graph, curve: FaithfulnessCurve | None = None, computed_on: dict[str, Any] | None = None,
                    reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """The top-level keys a circuit file of `graph` holds beside EAP-IG's (`reserved`: the format's own keys): the
    record the graph was read with, `graph.extras`, in its order, with `curve` (see `curve_document`) as its
    "faithfulness" and `computed_on` (see `task_document`) as its "task" when given. Each is checked
    (`check_extras`): UserError naming graph.extras or computed_on, also for an extra key that is one of the format's
    own (the writer fills those from the graph); WrongTypeError when graph.extras is not a dict."""
    if not isinstance(graph.extras, dict):
        raise WrongTypeError(f"graph.extras must be a dict of a circuit file's extra keys ({{}} for none), got "
                             f"{checks.describe(graph.extras)}")
    clash = [k for k in graph.extras if k in reserved]
    if clash:
        raise UserError(f"graph.extras holds {clash[0]!r}, a key of EAP-IG's own file, which the writer fills from "
                        "the graph itself; remove it from graph.extras")
    replaced = {key for key, given in (("faithfulness", curve), ("task", computed_on)) if given is not None}
    check_extras({k: v for k, v in graph.extras.items() if k not in replaced}, "graph.extras")
    extras = dict(graph.extras)  # the record's order; a key replaced below keeps its place
    if curve is not None:
        extras["faithfulness"] = curve_document(curve)
    if computed_on is not None:
        extras["task"] = check_extras({"task": computed_on}, "computed_on")["task"]
    return extras


@checks.typed
def to_json(graph: Graph, path: str | Path, *, curve: FaithfulnessCurve | None = None,
            computed_on: dict | None = None) -> Path:
    """Write `graph` as EAP-IG's JSON (every edge's score and in_graph, every node's in_graph), with the faithfulness
    curve `curve` as an extra key the views read and EAP-IG ignores (`computed_on`: the extra key "task", see
    `task_document`). Returns the path. UserError for a path whose extension is not .json (the reader goes by it),
    and for a NaN or infinite edge score (naming the edge; JSON has no such number)."""
    path = checks.writable_file(path, "path")
    _suffix(path, ".json")
    check_finite_scores(graph, "to_json")
    document = to_document(graph, curve, computed_on)
    try:  # before the file is claimed: a .pt's extra key may hold what JSON cannot (a tensor)
        json.dumps({k: v for k, v in document.items() if k not in EAP_IG_JSON_KEYS})
    except (TypeError, ValueError) as err:
        raise UserError(f"path {path}: graph.extras cannot be written as JSON ({err}); write a .pt instead, or remove "
                        "that key from graph.extras") from None

    def write(temp: str) -> None:
        with open(temp, "w") as f:
            json.dump(document, f)

    _write_atomic(path, write)
    return path


@checks.typed
def to_pt(graph: Graph, path: str | Path, *, curve: FaithfulnessCurve | None = None,
          computed_on: dict | None = None) -> Path:
    """Write `graph` as EAP-IG's `.pt` (the score and in-graph matrices in its (senders, receivers) layout); `curve`
    and `computed_on` as in `to_json` (plain lists, which EAP-IG's from_pt leaves alone and torch.load reads with
    weights_only). UserError for a path whose extension is not .pt (the reader goes by it), and for a NaN or infinite
    edge score (naming the edge; from_pt refuses to read one back)."""
    path = checks.writable_file(path, "path")
    _suffix(path, ".pt")
    check_finite_scores(graph, "to_pt")
    document = {"cfg": _cfg(graph), "src_nodes": graph.sender_names, "dst_nodes": graph.receiver_names,
                "edges_scores": graph.scores.detach().to("cpu", torch.float32).clone(),
                "edges_in_graph": graph.in_graph.to("cpu").clone(), "nodes_in_graph": graph.nodes_in_graph.to("cpu").clone()}
    document.update(extras_document(graph, curve, computed_on, EAP_IG_PT_KEYS))
    _write_atomic(path, lambda temp: torch.save(document, temp))
    return path


@checks.typed
def save_graph(graph: Graph, path: str | Path, *, curve: FaithfulnessCurve | None = None,
               computed_on: dict | None = None) -> Path:
    """Write `graph` as EAP-IG's JSON or `.pt`, chosen by the file's extension (UserError for any other); `curve` (a
    faithfulness_curve) goes in the extra key "faithfulness" that minineo.views.circuit draws, `computed_on` (see
    `task_document`) in the extra key "task". UserError for a non-finite edge score, as in to_json and to_pt."""
    path = Path(path)
    suffix = _suffix(path)
    check_finite_scores(graph, "save_graph")
    write = to_json if suffix == ".json" else to_pt
    return write(graph, path, curve=curve, computed_on=computed_on)


def _suffix(path: Path, expected: str | None = None) -> str:
    """The circuit file's extension (.json or .pt; `expected`: that one only); a UserError otherwise."""
    suffix = path.suffix.lower()
    if path.is_dir():
        raise UserError(f"path {path} is a folder; give the circuit file to write, e.g. {path / 'circuit.json'}")
    if expected is not None and suffix != expected:
        other = "to_pt" if expected == ".json" else "to_json"
        raise UserError(f"path {path}: this writer writes EAP-IG's {expected} file, but the name ends in "
                        f"{suffix or 'no extension'!r} (the reader goes by the extension); name it circuit{expected}, "
                        f"or use {other} / save_graph")
    if suffix not in SUFFIXES:
        raise UserError(f"path {path}: a circuit file is EAP-IG's .json or .pt, not "
                        f"{suffix or 'a file without extension'!r}; name it circuit.json or circuit.pt")
    return suffix


def _graph_from_cfg(cfg: Any, path: Path | str) -> Graph:
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("n_layers", "n_heads", "d_model")):
        raise UserError(f"{path}: 'cfg' must be a dict with n_layers, n_heads and d_model (EAP-IG's graph config), "
                        f"got {cfg!r:.80}")
    if cfg.get("parallel_attn_mlp"):
        raise UserError(f"{path}: the graph is of a parallel attention/MLP model (parallel_attn_mlp true); GPT-2 and "
                        "GPT-Neo run attention then MLP, so this circuit is for another architecture")
    model = cfg.get("model")
    if model is not None and not (isinstance(model, str) and model.strip()):  # read as "no identity", it would fit
        # any model silently
        raise UserError(f"{path}: cfg's model identity must be the model's name as a non-empty string (e.g. "
                        f"\"tiny-gpt2\"), got {checks.describe(model)}; fix it, or remove the key")
    try:
        return Graph(cfg["n_layers"], cfg["n_heads"], cfg["d_model"], model,
                     model_asserted=cfg.get("model_asserted") is True and model is not None)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def _describe(graph: Graph) -> str:
    name = f"{model_identity(graph.model)!r}, " if graph.model else ""
    return f"{name}{graph.n_layers} layers x {graph.n_heads} heads, d_model {graph.d_model}"


def check_same_model(graph: Graph, expected: Graph, what: str) -> None:
    """UserError naming both identities unless `graph` (read from `what`) fits `expected`: the shapes always; the
    names when both are known."""
    shapes = (graph.n_layers, graph.n_heads, graph.d_model)
    if shapes != (expected.n_layers, expected.n_heads, expected.d_model) or (
            graph.model and expected.model and model_identity(graph.model) != model_identity(expected.model)):
        raise UserError(f"{what} is a circuit for another model ({_describe(graph)}), not for this one "
                        f"({_describe(expected)}); give a circuit file found on this model, or load the model it names")


def _expected(model: Model | Graph | None) -> Graph | None:
    if model is None or isinstance(model, Graph):
        return model
    return Graph.from_model(model)


EAP_IG_JSON_KEYS = ("cfg", "nodes", "edges")
EAP_IG_PT_KEYS = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph")


@checks.typed
def from_json(path: str | Path, model: Model | Graph | None = None) -> Graph:
    """Read EAP-IG's JSON graph file (scores, circuit edges, circuit nodes; `logits` ignored). With `model` (a Model
    or a Graph), a file for another model is refused with both identities named (UserError). MissingFileError for a
    path that does not exist, UserError for a folder or a file that is not EAP-IG's JSON graph (`from_document`)."""
    path = _existing(path)
    return from_document(_read_json(path), str(path), model)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a JSON file ({err}); give a circuit written by EAP-IG's to_json or minineo") from None


def from_document(document: Any, where: str = "the graph", model: Model | Graph | None = None) -> Graph:
    """The Graph of EAP-IG's JSON layout as a dict (what `json.load` gives of a `to_json` file): the one check of
    such a graph, for files and for the dicts minineo.views.circuit is given. Every edge of EAP-IG's edge set for the
    cfg's shape must be there, each with a finite score (null: 0) and a true/false in_graph, and no other edge; a
    model identity in cfg must be a string. A node missing from "nodes" is read as out of the circuit (EAP-IG's
    from_json accepts such a file too), unless it has in-circuit edges in and out: then the message says it is
    missing. `where` names the source in messages. UserError otherwise."""
    if not isinstance(document, dict) or not all(k in document for k in EAP_IG_JSON_KEYS):
        raise UserError(f"{where}: an EAP-IG graph file needs the keys 'cfg', 'nodes' and 'edges'")
    for key in ("nodes", "edges"):
        if not isinstance(document[key], dict):
            raise UserError(f"{where}: {key!r} must be a JSON object of {{name: {{...}}}}, got a "
                            f"{type(document[key]).__name__}; give a circuit written by EAP-IG's to_json or minineo")
    graph = _graph_from_cfg(document["cfg"], where)
    _check(graph, model, where)
    senders = {name: i for i, name in enumerate(graph.sender_names)}
    for name, info in document["nodes"].items():
        if name == "logits":
            continue
        if name not in senders:
            raise UserError(f"{where}: node {name!r} is not a node of a {graph.n_layers}-layer, {graph.n_heads}-head "
                            "graph; node names are input, a{L}.h{H}, m{L} and logits")
        graph.nodes_in_graph[senders[name]] = _flag(info.get("in_graph") if isinstance(info, dict) else info,
                                                    f"{where}: node {name!r}")
    index = {name: (s, r) for name, s, r in graph.edges()}  # one lookup table: 32,491 names at GPT-2 small's shape
    for name, info in document["edges"].items():
        if name not in index:
            try:
                graph.edge_index(name)  # raises, naming the edge
            except UserError as err:
                raise UserError(f"{where}: {err}") from None
        s, r = index[name]
        if not isinstance(info, dict):
            raise UserError(f"{where}: edge {name!r} must be {{\"score\": number, \"in_graph\": true/false}}, got "
                            f"{checks.describe(info)}")
        graph.scores[s, r] = _score(info.get("score"), f"{where}: edge {name!r}")
        if "in_graph" not in info:  # EAP-IG writes it for every edge: read as false, a circuit would lose the edge
            raise UserError(f"{where}: edge {name!r} has no \"in_graph\" (EAP-IG writes true or false for every "
                            "edge); add it")
        graph.in_graph[s, r] = _flag(info["in_graph"], f"{where}: edge {name!r}")
    _check_consistent(graph, where, "nodes", listed=document["nodes"].keys())
    if len(document["edges"]) != len(index):  # EAP-IG writes every edge: a missing one is not a score of 0
        missing = [name for name in index if name not in document["edges"]]
        raise UserError(f"{where}: {len(missing)} of the {len(index)} edges of a {graph.n_layers}-layer, "
                        f"{graph.n_heads}-head graph are missing (first: {', '.join(missing[:3])}); EAP-IG's to_json "
                        "and minineo write every edge, so this file was cut or is for another shape")
    graph.extras = _extras(document, EAP_IG_JSON_KEYS, where)
    return graph


def _extras(document: dict, keys: tuple[str, ...], where: Path | str) -> dict[str, Any]:
    """A file's top-level keys other than EAP-IG's `keys`, in its order, checked (`check_extras`): `Graph.extras`."""
    return check_extras({k: v for k, v in document.items() if k not in keys}, where)


def _check_consistent(graph: Graph, where: Path | str, field: str, listed: Collection[str] | None = None) -> None:
    """UserError when a node is marked out of the circuit although it has an in-circuit edge in and one out (`input`:
    one out): EAP-IG's apply_topn marks such a node in, and prune keeps it, so the file's two records disagree. (An
    unpruned file may hold edges into a node without an edge out, or out of one without an edge in: EAP-IG's own
    unpruned circuits do; those nodes are out, and pruning removes those edges.)

    listed: the node names a JSON file's `field` holds. A node it leaves out is read as out of the circuit (EAP-IG's
    to_json writes every node, but its from_json reads any subset, and so does this reader); when such a node has
    in-circuit edges in and out, the message says that it is missing."""
    from minineo.discovery.circuits import _nodes_with_edges_in_and_out, receiver_nodes  # no cycle: circuits
    # imports nothing of this module

    owner = receiver_nodes(graph)
    bad = _nodes_with_edges_in_and_out(graph, owner) & ~graph.nodes_in_graph
    if bool(bad.any()):
        node = int(bad.nonzero()[0])
        edges = graph.in_graph & graph.real_edges
        n = int(edges[node].sum()) + int(edges[:, owner == node].sum())
        name = graph.sender_names[node]
        if listed is not None and name not in listed:
            raise UserError(f"{where}: node {name!r} is missing from {field!r} (a node not listed is read as out of "
                            f"the circuit), but {n} of its edges, in and out, are in_graph true; add "
                            f"\"{name}\": {{\"in_graph\": true}} to {field!r} (EAP-IG's to_json and minineo write "
                            "every node), or mark its edges out")
        raise UserError(f"{where}: {field} marks node {graph.sender_names[node]!r} out of the circuit (in_graph "
                        f"false), but {n} of its edges, in and out, are in_graph true; the two records disagree: "
                        "mark the node in, or its edges out")


TASK_KEYS = {"name": str, "n_pairs": int, "pairs": str}


def task_document(name: str, n_pairs: int, pairs: str, **more: Any) -> dict[str, Any]:
    """The optional top-level `"task"` key minineo writes beside EAP-IG's (which EAP-IG ignores): what the scores were
    computed on. `name` ("ioi", "induction" or the JSONL's path), `n_pairs`, `pairs` (a hash of the pairs' tokens and
    answers: minineo.discovery.acdc.pairs_fingerprint), and for the built-in tasks `n` and `seed`."""
    return {"name": name, "n_pairs": n_pairs, "pairs": pairs, **more}


def check_extras(extras: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """minineo's optional keys of a circuit file, checked: "faithfulness" (see `curve_document`) and "task" (see
    `task_document`); UserError naming the key otherwise. Other keys pass (EAP-IG ignores them too)."""
    raw = extras.get("faithfulness")
    if raw is not None:
        ok = isinstance(raw, dict) and isinstance(raw.get("n_edges"), list) and isinstance(raw.get("faithfulness"),
                                                                                           list)
        if ok:
            sizes, values = raw["n_edges"], raw["faithfulness"]
            ok = (len(sizes) == len(values) and len(sizes) > 0
                  and all(checks.is_integer(k) and k >= 0 for k in sizes)
                  and all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in values)
                  and raw.get("ranking", "absolute") in ("absolute", "signed"))
        if not ok:
            raise UserError(f"{where}: the optional \"faithfulness\" key must be {{\"n_edges\": [k, ...], "
                            "\"faithfulness\": [f, ...], \"ranking\": \"absolute\" or \"signed\"} with as many "
                            "finite values as sizes k (whole numbers >= 0); fix or remove it")
    task = extras.get("task")
    if task is not None:
        ok = isinstance(task, dict) and all(isinstance(task.get(k), t) and not isinstance(task.get(k), bool)
                                            for k, t in TASK_KEYS.items())
        if not ok:
            raise UserError(f"{where}: the optional \"task\" key must be {{\"name\": str, \"n_pairs\": int, "
                            f"\"pairs\": str, ...}} (what the scores were computed on), got {checks.describe(task)}; "
                            "fix or remove it")
    return extras


@checks.typed
def read_file(path: str | Path, model: Model | Graph | None = None) -> tuple[Graph, dict[str, Any]]:
    """(the Graph, the file's other top-level keys: `graph.extras`) of an EAP-IG graph file, JSON or `.pt` by its
    extension: the extra keys are minineo's optional ones ("faithfulness", see `curve_document`; "task", see
    `task_document`), which EAP-IG ignores, checked (`check_extras`). `model` and the errors as in `load_graph`."""
    graph = load_graph(path, model)
    return graph, graph.extras


def _score(value: Any, where: str) -> float:
    """An edge's score: a finite number, or None (EAP-IG's older files write None for no score: 0)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} has the score {value!r}; every score is a finite number (or null for none)")
    return float(value)


def _flag(value: Any, where: str) -> bool:
    """An in_graph flag: true or false (a string such as "no" would be truthy)."""
    if not isinstance(value, bool):
        raise UserError(f"{where} has in_graph {value!r}; it must be true or false")
    return value


@checks.typed
def from_pt(path: str | Path, model: Model | Graph | None = None) -> Graph:
    """Read EAP-IG's `.pt` graph file (see the module docstring); `model` and the errors as in `from_json`."""
    path = _existing(path)
    return _from_pt_document(_read_pt(path), path, model)


def _read_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a torch archive
        raise UserError(f"{path}: not a torch file EAP-IG wrote ({type(err).__name__}: {checks.shortened(str(err), 120)}); "
                        "give a circuit written by EAP-IG's to_pt or minineo") from None


def _from_pt_document(document: Any, path: Path, model: Model | Graph | None) -> Graph:
    required = EAP_IG_PT_KEYS
    missing = [k for k in required if not isinstance(document, dict) or k not in document]
    if missing:
        raise UserError(f"{path}: an EAP-IG .pt graph file needs the keys {', '.join(required)}; missing "
                        f"{', '.join(missing)}")
    graph = _graph_from_cfg(document["cfg"], path)
    _check(graph, model, path)
    shape = (graph.n_senders, graph.n_receivers)
    for key in ("edges_scores", "edges_in_graph", "nodes_in_graph"):
        if not isinstance(document[key], torch.Tensor):
            raise UserError(f"{path}: {key} must be a tensor, got {checks.describe(document[key])}")
    scores = document["edges_scores"]
    if not scores.is_floating_point() or not bool(scores.isfinite().all()):
        held = " holding NaN or inf" if scores.is_floating_point() else ""
        raise UserError(f"{path}: edges_scores must be finite floating-point scores, got a {scores.dtype} tensor{held}")
    for key in ("edges_scores", "edges_in_graph"):
        if tuple(document[key].shape) != shape:
            raise UserError(f"{path}: {key} is {tuple(document[key].shape)}, but a {graph.n_layers}-layer, "
                            f"{graph.n_heads}-head graph has (senders, receivers) = {shape}")
    if tuple(document["nodes_in_graph"].shape) != (graph.n_senders,):
        raise UserError(f"{path}: nodes_in_graph is {tuple(document['nodes_in_graph'].shape)}, expected "
                        f"({graph.n_senders},)")
    if list(document["src_nodes"]) != graph.sender_names or list(document["dst_nodes"]) != graph.receiver_names:
        raise UserError(f"{path}: src_nodes / dst_nodes are not EAP-IG's order for this shape; the matrices cannot be "
                        "read in its layout")
    for key in ("edges_in_graph", "nodes_in_graph"):
        if document[key].dtype != torch.bool:
            raise UserError(f"{path}: {key} must be a bool tensor (EAP-IG's), got a {document[key].dtype} tensor")
    graph.scores = document["edges_scores"].to(torch.float32).clone()
    graph.in_graph = document["edges_in_graph"].clone()
    graph.nodes_in_graph = document["nodes_in_graph"].clone()
    impossible = graph.in_graph & ~graph.real_edges
    if bool(impossible.any()):
        s, r = impossible.nonzero()[0].tolist()
        raise UserError(f"{path}: edges_in_graph is true at {int(impossible.sum())} cells that are no edge (first: "
                        f"{graph.sender_names[s]} -> {graph.receiver_names[r]}, which does not feed it: a sender "
                        "reaches only later layers' inputs); the file is damaged, write it again")
    _check_consistent(graph, path, "nodes_in_graph")
    graph.extras = _extras(document, EAP_IG_PT_KEYS, path)
    return graph


@checks.typed
def load_graph(path: str | Path, model: Model | Graph | None = None) -> Graph:
    """Read an EAP-IG graph file, JSON or `.pt` by its extension; `model` as in `from_json`.

    A file that names no model (EAP-IG's own) can be checked by shape only: with `model` given it is read if the
    shape fits, `graph.model` stays None (never filled in from `model`), and minineo.report says on stderr that the
    file carries no identity; the same in from_json and from_pt. Errors as in `from_json` (MissingFileError for a
    path that does not exist, UserError for a folder, another extension or a damaged file).

    `graph.extras` holds the file's keys beside EAP-IG's, checked (`check_extras`): "task" (the method, score_unit
    and pairs of the scores), "faithfulness" (the curve) and any other; `save_graph` writes them back, so a file
    read and written again keeps what it says about its scores (EAP-IG's own files have none: {})."""
    path = _existing(path)
    if _suffix(path) == ".json":
        return from_document(_read_json(path), str(path), model)
    return _from_pt_document(_read_pt(path), path, model)


def _existing(path: str | Path) -> Path:
    """The circuit file to read (from_json, from_pt, read_file, load_graph): MissingFileError when it does not exist,
    UserError when it is a folder (checks.existing_path, the check of every path minineo reads)."""
    return checks.existing_path(path, "path", kind="file",
                                fix="give the path of an EAP-IG graph file (.json or .pt), as EAP-IG's to_json / "
                                    "to_pt or minineo's save_graph (minineo discover --out) write it")


def _check(graph: Graph, model: Model | Graph | None, path: Path | str) -> None:
    expected = _expected(model)
    if expected is not None:
        check_same_model(graph, expected, str(path))
        if graph.model is None:  # EAP-IG's own files: only the shape can be checked, and that is said
            report.warn(f"{path} carries no model identity (EAP-IG's own files name none): checked against "
                        f"{_describe(expected)} by shape only; graph.model stays None")
