"""ACDC (Conmy et al., NeurIPS 2023, "Towards Automated Circuit Discovery for Mechanistic Interpretability"): prune
the full graph edge by edge with the exact edge-patched forward (`evaluate`).

Receivers are visited in reverse topological order (`logits`, then `m{L-1}`, the heads of layer L-1 (their q, k, v
inputs), `m{L-2}`, ...), and each receiver's incoming edges from its latest sender to its earliest. Each edge is
removed from the current circuit C and the patched run measured:
  - metric mode (default): the change m(C without e) - m(C) of the mean metric, divided by the gap
    m(full) - m(empty) to give d, so thresholds read as fractions of the behaviour; the edge goes when |d| < threshold
    (`absolute=True`, the default: it moves the behaviour neither way), or when d > -threshold (`absolute=False`,
    ACDC's signed rule: removing it does not lower the metric by threshold or more);
  - KL mode (`kl=True`, ACDC's default objective): d = KL(C without e) - KL(C), KL(full clean logits || circuit
    logits) at the last position, mean over pairs, in nats; the edge goes when d < threshold.
Once removed an edge stays out and C is updated. A node none of whose outgoing edges is left cannot affect the
output, so its incoming edges are removed without a forward: their score is 0 exactly, by construction, not a guess
(the node's children read its corrupted output whatever its inputs are, so m(C without e) = m(C)). Every edge's
change goes into `graph.scores` (and the state's "scores") in the metric's own units, like every other method's
scores (metric mode: m(C without e) - m(C), not divided by the gap; KL mode: KL(C without e) - KL(C) in nats); the
result is pruned as EAP-IG prunes. Unlike `attribute`'s scores (one edge corrupted in the full graph), each is
measured against the circuit left at the edge's turn.

Cost: one patched run (two forwards of the pairs) per measured edge, run one after another since each decision
changes C: for models up to a few thousand edges (the zoo's 110 take seconds); GPT-2 small's 32,491 would take hours,
use `attribute` there. `state` names a JSON file holding every decision so far, written after each one through a
temporary file and a rename: a crash or Ctrl-C loses at most the edge being measured, and the same call resumes.
The state records what it was computed on (the model by name, a hash of the pairs, the metric, threshold and mode):
another run is refused, both named, rather than handed the first run's circuit. A damaged state (a field of the wrong
type, out of range, not finite, or decisions that do not fit the visiting order) is refused, naming the field; so is
one whose decisions contradict its own threshold and mode and recorded scores (an edge in "removed" whose score the
rule keeps, one kept whose score it removes, "removed" and "scores" disagreeing on an edge), naming the edge.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from minineo import checks, outputs
from minineo import progress, report
from minineo.discovery import circuits
from minineo.discovery.faithfulness import full_metric
from minineo.discovery.graph import Graph
from minineo.discovery.pairs import Metric, Pairs, check_prompts_differ, logit_diff
from minineo.discovery.engine import Recording
from minineo.discovery.files import model_identity
from minineo.discovery.patched import check_graph, check_pairs
from minineo.errors import EmptyCircuitError, UserError

if TYPE_CHECKING:
    from minineo.forward.model import Model

DEFAULT_THRESHOLD = 0.01  # normalised metric units; keeps a faithful circuit on both zoo models' IOI (docs/discovery.md)
DEFAULT_KL_THRESHOLD = 0.01  # nats
# what graph.scores (and a state file's "scores" / "removed") hold: recorded in the state's settings, so a state of an
# older minineo (whose scores were divided by m(full) - m(empty)) is refused rather than mixed in
SCORE_UNIT = "metric: m(C without e) - m(C)"
SCORE_UNIT_KL = "nats: KL(C without e) - KL(C)"


@checks.typed
def kl_metric(model: Model) -> Metric:
    """A Metric giving KL(clean run || this run) of the next-token distribution at the last position, per pair (nats).

    The clean run's log-probabilities are computed once per batch of clean tokens and kept."""
    reference: dict[tuple, torch.Tensor] = {}

    def metric(logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:
        key = (pairs.clean.data_ptr(), tuple(pairs.clean.shape), pairs.clean.device)
        if key not in reference:
            with torch.no_grad():
                clean = model(pairs.clean.to(logits.device), attention_mask=None if pairs.attention_mask is None
                              else pairs.attention_mask.to(logits.device))
            reference[key] = torch.log_softmax(clean[:, -1].double(), dim=-1)  # (n, d_vocab)
        clean_log = reference[key]
        log = torch.log_softmax(logits[:, -1].double(), dim=-1)
        return (clean_log.exp() * (clean_log - log)).sum(-1).float()  # (n,)

    metric.model = model  # type: ignore[attr-defined]  (attribute / acdc / evaluate refuse it for another model)
    return metric


def acdc_order(graph: Graph) -> list[tuple[int, int]]:
    """(sender, receiver) of every edge in ACDC's visiting order: receivers in reverse topological order, each one's
    senders from the latest to the earliest."""
    receivers = [graph.logits_index]
    for layer in reversed(range(graph.n_layers)):
        receivers.append(graph.receiver_index(layer))
        receivers += [graph.receiver_index(layer, h, x) for h in reversed(range(graph.n_heads)) for x in "vkq"]
    order = []
    for r in receivers:
        order += [(s, r) for s in reversed(graph.real_edges[:, r].nonzero().flatten().tolist())]
    return order


class _PatchedRuns:
    """`evaluate`'s patched run with the corrupted run recorded once per batch and metric (ACDC measures one circuit
    after another on the same pairs, so only the patched clean run is repeated): minineo.discovery.engine."""

    def __init__(self, model: Model, graph: Graph, pairs: Pairs, batch_size: int | None):
        self.model, self.graph = model, graph
        device = model.W_E.device
        self.batches = [batch.to(device) for batch in pairs.batches(batch_size or len(pairs))]
        self.recordings: dict[int, tuple[Metric, list[Recording]]] = {}  # id(metric) -> (it, a Recording per batch)

    @torch.no_grad()
    def mean(self, circuit: Graph, metric: Metric) -> float:
        """The metric's mean over pairs through `circuit` (what evaluate(...).mean() gives)."""
        if id(metric) not in self.recordings:
            self.recordings[id(metric)] = metric, [Recording(self.model, self.graph, b, metric) for b in self.batches]
        total = sum(float(rec.run(circuit.in_graph).double().sum()) for rec in self.recordings[id(metric)][1])
        return total / sum(len(b) for b in self.batches)


def pairs_fingerprint(pairs: Pairs) -> str:
    """A short hash of the pairs' tokens, mask, answers and wrong answers: two sets of pairs share it only if they are
    the same pairs (another task, n, seed or JSONL gives another)."""
    digest = hashlib.sha256()
    for name in ("clean", "corrupted", "attention_mask", "answer", "wrong"):
        value = getattr(pairs, name)
        digest.update(name.encode())
        if value is not None:
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def metric_name(metric: Metric) -> str:
    """The metric as a state file records it: module.qualname (a lambda is `<lambda>` of its module)."""
    return f"{getattr(metric, '__module__', None) or '?'}.{getattr(metric, '__qualname__', type(metric).__name__)}"


def _settings(graph: Graph, threshold: float, kl: bool, absolute: bool, pairs: Pairs, metric: Metric) -> dict:
    """What an ACDC run was computed on: a state is resumed only by a run with all of these the same."""
    return {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "d_model": graph.d_model,
            "model": model_identity(graph.model), "threshold": threshold, "kl": kl, "absolute": absolute,
            "n_pairs": len(pairs), "pairs": pairs_fingerprint(pairs), "metric": "kl" if kl else metric_name(metric),
            "score_unit": SCORE_UNIT_KL if kl else SCORE_UNIT}


def _write_state(path: Path, state: dict) -> None:
    outputs.write_text(path, json.dumps(state), "the ACDC state file")  # whole or not at all, the umask's mode


STATE_KEYS = ("settings", "done", "current", "removed", "scores")


def _damaged(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not an ACDC state file ({why}); give another state path (--state) for this run, "
                     "and keep the file if it is something else (a circuit file, say)")


def load_state(path: str | Path) -> dict | None:
    """The ACDC state file at `path` checked field by field (None when there is no file): a JSON object with
    "settings" (an object), "done" (an integer >= 0: the edges decided), "current" (a finite number: m(C) or KL(C)
    of the circuit so far), "removed" and "scores" (objects of edge name -> finite number: "scores" every decided
    edge's change, 0 for an edge into a node that reached nothing any more; "removed" the removed edges' changes; a
    state of an older minineo left the unmeasured edges out of "scores": they read as 0). What each field must be
    against a run (done <= the graph's edges, the names its edges) is checked by `acdc`. UserError naming the file
    and the field otherwise (the CLI checks its --state file with this before any work)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise UserError(f"state {path} is not a file; give the path of an ACDC state file (it is created if missing)")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _damaged(path, "not JSON") from None
    if not isinstance(state, dict):
        raise _damaged(path, f"a JSON {type(state).__name__}, not an object")
    if not isinstance(state.get("settings"), dict):
        raise _damaged(path, "no settings")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise _damaged(path, f"no {', '.join(repr(k) for k in missing)}")
    done = state["done"]
    if not checks.is_integer(done) or done < 0:
        raise _damaged(path, f"\"done\" must be a whole number >= 0 (the edges decided), got {checks.describe(done)}")
    if not _finite(state["current"]):
        raise _damaged(path, f"\"current\" must be a finite number (the circuit's metric), got "
                             f"{checks.describe(state['current'])}")
    for key in ("removed", "scores"):
        table = state[key]
        if not isinstance(table, dict):
            raise _damaged(path, f"{key!r} must be an object of edge name -> number, got {checks.describe(table)}")
        for name, value in table.items():
            if not _finite(value):
                raise _damaged(path, f"{key!r}: edge {name!r} has {checks.describe(value)}, not a finite number")
    return state


def _finite(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _read_state(path: Path, settings: dict) -> dict | None:
    state = load_state(path)
    if state is None:
        return None
    saved = state["settings"]
    if saved != settings:
        differ = [key for key in settings if saved.get(key) != settings[key]] + [k for k in saved if k not in settings]
        said = "; ".join(f"{key}: the state's {saved.get(key)!r}, this run's {settings.get(key)!r}" for key in differ)
        raise UserError(f"{path} holds an ACDC run computed on something else ({said}; 'pairs' is a hash of the "
                        "pairs' tokens and answers); delete it to start afresh, or give another state path")
    return state


def _check_decisions(path: Path, state: dict, order: list[str]) -> None:
    """The state's decisions against this graph's visiting order: done <= the edges; every removed or scored
    name is an edge among the first `done` visited, and each of those is in one of them."""
    done = state["done"]
    if done > len(order):
        raise _damaged(path, f"\"done\" is {done}, past the graph's {len(order)} edges")
    decided = set(order[:done])
    recorded = set(state["removed"]) | set(state["scores"])
    stray = sorted(recorded - decided)
    if stray:
        where = "not an edge of this graph" if stray[0] not in order else f"not among the first {done} edges decided"
        raise _damaged(path, f"edge {stray[0]!r} is {where}")
    undecided = [name for name in order[:done] if name not in recorded]
    if undecided:
        raise _damaged(path, f"\"done\" is {done} but edge {undecided[0]!r}, decided by then, has no record")


def _removes(d: float, threshold: float, kl: bool, absolute: bool) -> bool:
    """ACDC's rule: whether an edge whose removal changes what the threshold reads by `d` goes."""
    return d < threshold if kl else (abs(d) < threshold if absolute else d > -threshold)


def _check_against_the_rule(path: Path, state: dict, circuit: Graph, order: list[tuple[int, int]],
                            names: dict, owner: torch.Tensor, scale: float) -> None:
    """The state's decisions replayed against its own settings (threshold, kl, absolute) and recorded scores, in
    visiting order from the full graph: an edge whose receiver's node reaches nothing by its turn was removed
    without a forward (in "removed" with 0.0, and 0.0 in "scores" if there); any other decided edge was measured,
    and is in "removed" exactly when the rule removes its score (the score divided by `scale`, m(full) - m(empty);
    KL: as is), both tables giving a removed edge the same value. A hand-edited state whose decisions contradict
    these is refused, naming the file, the field and the edge. A score within a hair (1e-5 of the threshold or of
    the score) of the threshold is let be either way: the gap is recomputed, and another batch size moves it in
    float32's last digits."""
    settings = state["settings"]
    threshold, kl, absolute = settings["threshold"], settings["kl"], settings["absolute"]
    removed, scores = state["removed"], state["scores"]
    gap = f"m(full) - m(empty) = {scale:+.6g} here"
    rule = (f"KL mode: an edge goes when its change < {threshold:g} nats" if kl else
            f"an edge goes when |change / (m(full) - m(empty))| < {threshold:g}, {gap}" if absolute else
            f"an edge goes when change / (m(full) - m(empty)) > -{threshold:g}, {gap}")

    def refuse(why: str) -> UserError:
        return UserError(f"{path}: the ACDC state's decisions contradict its own settings and scores ({why}; {rule});"
                         " it was edited by hand or damaged: delete the state to start over, or give another state "
                         "path")

    in_graph = circuit.real_edges.clone()
    for s, r in order[:state["done"]]:
        name, node = names[s, r], int(owner[r])
        if node >= 0 and not bool(in_graph[node].any()):  # acdc removed it without a forward, with 0.0
            if name not in removed:
                raise refuse(f"edge {name!r} is not in 'removed', but its receiver reaches nothing by its turn, so "
                             "ACDC removes it without a forward (score 0.0)")
            if removed[name] != 0.0 or scores.get(name, 0.0) != 0.0:
                field, value = ("removed", removed[name]) if removed[name] != 0.0 else ("scores", scores[name])
                raise refuse(f"{field!r}: edge {name!r} has {value!r}, but its receiver reaches nothing by its turn, "
                             "so it was removed without a forward, with score 0.0")
            in_graph[s, r] = False
            continue
        score = scores.get(name, removed.get(name))
        if name in removed and name in scores and removed[name] != scores[name]:
            raise refuse(f"edge {name!r} has {removed[name]!r} in 'removed' but {scores[name]!r} in 'scores'; the "
                         "two record the same measured change")
        d = score if kl else score / scale
        slack = 1e-5 * max(threshold, abs(d)) + 1e-12
        if name in removed and not _removes(d, threshold + slack, kl, absolute):
            raise refuse(f"'removed' has edge {name!r}, whose recorded score {score:+.6g} the rule keeps")
        if name not in removed and _removes(d, threshold - slack, kl, absolute):
            raise refuse(f"edge {name!r} is kept (in 'scores', not in 'removed'), but the rule removes its recorded "
                         f"score {score:+.6g}")
        if name in removed:
            in_graph[s, r] = False


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0 \
            or threshold == float("inf"):
        raise UserError(f"threshold must be a finite number >= 0 (the largest change an edge may make and still be "
                        f"removed), got {threshold!r}")
    return float(threshold)


@checks.typed
def acdc(model: Model, pairs: Pairs, metric: Metric = logit_diff, *, threshold: float | None = None,
         kl: bool = False, absolute: bool = True, state: str | Path | None = None,
         batch_size: int | None = None, graph: Graph | None = None, on_empty: str = "warn") -> Graph:
    """ACDC's circuit of `model` on `pairs` (see the module docstring): a Graph whose `in_graph` is the circuit
    (pruned) and whose `scores` hold each measured edge's change in metric units (noising form: m(C without e) -
    m(C), not normalised; with `kl`, the change of KL in nats); the threshold compares that change divided by
    m(full) - m(empty) (with `kl`: in nats). A threshold that keeps no edge gives an empty circuit and says so
    through minineo.report (on_empty="warn", the default), or raises EmptyCircuitError (on_empty="raise"), whose
    `reason` says whether no edge passed the threshold or pruning removed the ones that did.

    threshold: default DEFAULT_THRESHOLD (normalised metric units) or DEFAULT_KL_THRESHOLD (nats, with `kl`); state:
    a JSON file to resume from and write to (refused, both named, if it was computed on another model (by name),
    pairs (a hash of their tokens and answers), metric, threshold or mode); graph: the graph to start
    from (its `model` names the circuit; default Graph.from_model(model)), not changed.
    Raises UserError for a bad threshold, a state file of another run or a damaged one (naming the field), one
    whose decisions contradict its own threshold, mode and scores (naming the edge), pairs whose clean and corrupted
    runs agree."""
    check_pairs(pairs, metric, batch_size, model)
    check_prompts_differ(pairs, name="acdc")  # (with kl too: every circuit's divergence would be 0)
    checks.one_of(on_empty, "on_empty", ("warn", "raise"))
    if graph is not None:
        check_graph(model, graph, "graph")  # attribute's and evaluate's check: another model's graph is refused
    threshold = _check_threshold(DEFAULT_KL_THRESHOLD if kl and threshold is None else
                                 DEFAULT_THRESHOLD if threshold is None else threshold)
    graph = Graph.from_model(model) if graph is None else graph.copy()
    circuit = graph.copy()
    circuit.in_graph = circuit.real_edges.clone()
    circuit.scores = torch.zeros_like(circuit.scores)
    run = _PatchedRuns(model, circuit, pairs, batch_size)
    if kl:
        divergence = kl_metric(model)
        measure: Callable[[Graph], float] = lambda c: run.mean(c, divergence)
        scale = 1.0
    else:
        full = full_metric(model, pairs, metric, batch_size=batch_size)
        empty = run.mean(Graph(graph.n_layers, graph.n_heads, graph.d_model), metric)
        if abs(full - empty) < 1e-6 * max(1.0, abs(full)):
            raise UserError(f"the metric is the same on the clean and the corrupted prompts ({full:+.4f}); ACDC "
                            "has nothing to keep; choose pairs whose corrupted prompt changes the metric (makes the model prefer the wrong answer more)")
        scale = full - empty
        measure = lambda c: run.mean(c, metric)

    order = acdc_order(circuit)
    settings = _settings(graph, threshold, kl, absolute, pairs, metric)
    path = None if state is None else checks.writable_file(state, "state")
    saved = None if path is None else _read_state(path, settings)
    done = 0
    current: float | None = None
    names = {(s, r): name for name, s, r in circuit.edges()}
    owner = circuits.receiver_nodes(circuit)
    if saved is not None:
        _check_decisions(path, saved, [names[e] for e in order])
        _check_against_the_rule(path, saved, circuit, order, names, owner, scale)
        done, current = int(saved["done"]), float(saved["current"])
        index = {name: (s, r) for name, s, r in circuit.edges()}
        for name in saved["removed"]:
            circuit.in_graph[index[name]] = False
        for name, d in saved["scores"].items():
            circuit.scores[index[name]] = d
    if current is None:
        current = measure(circuit)
    removed = {} if saved is None else dict(saved["removed"])
    scores = {} if saved is None else dict(saved["scores"])
    for name, change in removed.items():  # an older state kept the edges removed unmeasured (0.0) in "removed" only
        scores.setdefault(name, change)

    with progress.task(f"ACDC: {len(order)} edges, threshold {threshold:g}", total=len(order)) as advance:
        advance(done)
        for index in range(done, len(order)):
            s, r = order[index]
            node = int(owner[r])
            if node >= 0 and not bool(circuit.in_graph[node].any()):
                # the receiver's node reaches nothing: its inputs cannot matter, the change is 0 exactly
                circuit.in_graph[s, r] = False
                removed[names[s, r]] = scores[names[s, r]] = 0.0
            else:
                circuit.in_graph[s, r] = False
                value = measure(circuit)
                change = value - current  # the score: metric units (KL: nats)
                d = change / scale  # what the threshold reads: normalised units (KL: nats)
                circuit.scores[s, r] = change
                scores[names[s, r]] = change
                if _removes(d, threshold, kl, absolute):
                    current = value
                    removed[names[s, r]] = change
                else:
                    circuit.in_graph[s, r] = True
            if path is not None:
                _write_state(path, {"settings": settings, "done": index + 1, "current": current,
                                    "removed": removed, "scores": scores})
            advance()
    kept, _ = circuits.prune(circuit)
    if not circuit.n_edges_in_graph:
        why = ("every edge changed the metric by less" if not kept else
               f"it kept {kept} edge{'s' * (kept != 1)}, but none lies on a path from input to logits, so pruning "
               "removed them")
        message = (f"ACDC's threshold {threshold:g} keeps no edge ({why}); the empty circuit is the corrupted run, "
                   "not a finding; give a smaller threshold")
        if on_empty == "raise":
            raise EmptyCircuitError(message, why)
        report.warn(message)
    return circuit
