"""How faithful a circuit is, and MIB's two summary numbers (the MIB circuit track, hannamw/MIB-circuit-track,
`evaluate_area_under_curve`).

Normalised faithfulness of a circuit C: f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), each m the metric's mean
over pairs; m(full) is the clean run, m(empty) the circuit with no edge (the corrupted run), m(C) the exact
edge-patched run (`evaluate`). So f(full) = 1 and f(empty) = 0.

MIB's curve: at each edge fraction p of `MIB_FRACTIONS` the circuit is the top int(p E) edges (E = every edge of the
graph), pruned, and evaluated. Areas use the trapezoid rule on the linear p axis (MIB logs p only for a variable it
never uses), from p = .001 to 1, so a curve that is 1 everywhere has area 0.999:
  - CPR (higher is better): the area under f, edges ranked by signed score, the edge whose removal lowers the
    metric most first. MIB attributes with a loss (EAP-IG's `logit_diff(..., loss=True)`, minus the logit
    difference), so its "higher first" ranks exactly so; minineo's scores are in the noising form of the metric
    itself (an important edge of a positive logit difference scores below 0), so they are ranked by -score;
  - CMD (0 is best): the area of |1 - f|, edges ranked by |score|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from minineo import checks
from minineo import progress
from minineo.discovery import circuits
from minineo.discovery.graph import Graph, check_finite_scores
from minineo.discovery.pairs import Metric, Pairs, check_prompts_differ, logit_diff
from minineo.discovery.patched import check_pairs, evaluate, run_metric
from minineo.errors import UserError

if TYPE_CHECKING:
    from minineo.forward.model import Model

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def area_under(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under `values` over `fractions` (a linear axis), as MIB sums it."""
    _check_curve(fractions, values)
    return sum((fractions[i + 1] - fractions[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(values) - 1))


def area_from_one(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area of |1 - values| over `fractions` (MIB's CMD when edges are ranked by |score|)."""
    return area_under(fractions, [abs(1.0 - v) for v in values])


def _check_curve(fractions: Sequence[float], values: Sequence[float]) -> None:
    if len(fractions) != len(values) or len(fractions) < 2:
        raise UserError(f"a curve needs as many fractions as values, at least 2; got {len(fractions)} and {len(values)}")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise UserError(f"fractions must increase, got {list(fractions)}")


@dataclass
class FaithfulnessCurve:
    """One faithfulness curve. `fractions` (p), `n_edges` (int(p E) edges asked for), `n_kept` (edges left after
    pruning), `metric` (m(C), mean over pairs), `faithfulness` (f(C)); `full` = m(full), `empty` = m(empty);
    `absolute`: edges ranked by |score| (else by signed score)."""

    fractions: list[float]
    n_edges: list[int]
    n_kept: list[int]
    metric: list[float]
    faithfulness: list[float]
    full: float
    empty: float
    absolute: bool

    @property
    def area(self) -> float:
        """The area under the curve (CPR when `absolute` is False)."""
        return area_under(self.fractions, self.faithfulness)

    @property
    def area_from_one(self) -> float:
        """The area between the curve and 1 (CMD when `absolute` is True)."""
        return area_from_one(self.fractions, self.faithfulness)


@torch.no_grad()
def _check_scored(graph: Graph, what: str) -> None:
    """UserError for a graph with no edge scores (all 0) or a non-finite score (naming the edge): `what` ranks by them."""
    check_finite_scores(graph, what)
    if not bool(graph.scores[graph.real_edges].ne(0).any()):
        raise UserError("graph has no edge scores (all 0), so the curve would rank edges arbitrarily; score it first "
                        "with minineo.discovery.attribute(model, graph, pairs, method=...)")


def _check_inputs(pairs: Pairs, metric: Metric, batch_size: int | None, full: float | None, empty: float | None) -> None:
    check_pairs(pairs, metric, batch_size)
    check_prompts_differ(pairs)  # before any forward: the gap is 0 however the answers differ
    for name, value in (("full", full), ("empty", empty)):
        if value is not None:
            checks.number(value, name, fix="give the metric's mean over pairs, or None to measure it")
    if full is not None and empty is not None and abs(full - empty) < 1e-6 * max(1.0, abs(full)):
        raise UserError(f"full={full:+.4f} and empty={empty:+.4f} (as given) are equal, so f = (m(C) - empty) / "
                        "(full - empty) divides by zero; give m(clean) as full and m(corrupted) as empty of these "
                        "pairs, or leave them None to measure them")


def full_metric(model: Model, pairs: Pairs, metric: Metric = logit_diff, *, batch_size: int | None = None) -> float:
    """m(full): the metric's mean over pairs on the clean prompts, no patching (MIB's `evaluate_baseline`)."""
    device = model.W_E.device
    values = []
    for batch in pairs.batches(batch_size or len(pairs)):
        batch = batch.to(device)
        logits = model(batch.clean, attention_mask=batch.attention_mask)  # (batch, pos, d_vocab)
        values.append(run_metric(metric, logits, batch).float().cpu())
    return float(torch.cat(values).mean())


def empty_metric(model: Model, graph: Graph, pairs: Pairs, metric: Metric = logit_diff, *,
                 batch_size: int | None = None) -> float:
    """m(empty): the metric's mean over pairs with no edge in the circuit (every edge corrupted)."""
    empty = Graph(graph.n_layers, graph.n_heads, graph.d_model, graph.model)
    return float(evaluate(model, empty, pairs, metric, batch_size=batch_size).mean())


def normalised(value: float, full: float, empty: float) -> float:
    """(value - empty) / (full - empty); UserError when the clean and corrupted runs agree (nothing to recover)."""
    if abs(full - empty) < 1e-6 * max(1.0, abs(full)):
        raise UserError(f"the metric is the same on the clean and the corrupted prompts ({full:+.4f} and {empty:+.4f}), "
                        "so no circuit can be faithful or not; choose pairs whose corrupted prompt changes the metric (makes the model prefer the wrong answer more)")
    return (value - empty) / (full - empty)


@checks.typed
def faithfulness(model: Model, circuit: Graph, pairs: Pairs, metric: Metric = logit_diff, *,
                 full: float | None = None, empty: float | None = None, batch_size: int | None = None) -> float:
    """f(C) of `circuit` as it is (its `in_graph` edges; prune it first to match MIB). `full` / `empty` may be given
    to save their forwards.

    Raises UserError for pairs whose clean and corrupted prompts are all the same (pairs.check_prompts_differ), for
    a full and empty that are equal, as given or as measured (f divides by their difference), and for pairs,
    metric or batch_size of the wrong kind."""
    _check_inputs(pairs, metric, batch_size, full, empty)
    full = full_metric(model, pairs, metric, batch_size=batch_size) if full is None else full
    empty = empty_metric(model, circuit, pairs, metric, batch_size=batch_size) if empty is None else empty
    value = float(evaluate(model, circuit, pairs, metric, batch_size=batch_size).mean())
    return normalised(value, full, empty)


@checks.typed
def faithfulness_curve(model: Model, graph: Graph, pairs: Pairs, metric: Metric = logit_diff, *, absolute: bool = True,
                       fractions: Sequence[float] = MIB_FRACTIONS, full: float | None = None,
                       empty: float | None = None, batch_size: int | None = None) -> FaithfulnessCurve:
    """MIB's faithfulness curve of `graph`'s scores: at each fraction p the top int(p E) edges (by |score| when
    `absolute`, else by -score: the edges whose removal lowers the metric most), pruned, evaluated exactly. `graph`
    is not changed. One patched forward per fraction and batch, one corrupted forward per batch for all of them.

    Raises UserError for fractions that are not at least 2 increasing numbers in [0, 1], a graph with no edge scores
    (all 0) or with a NaN or infinite score (naming the edge), and for the pairs, metric, batch_size, full and empty
    as `faithfulness` does."""
    if not fractions or any(not 0 <= p <= 1 for p in fractions):
        raise UserError(f"fractions must be edge fractions between 0 and 1, got {list(fractions)}")
    if len(fractions) < 2 or any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise UserError(f"fractions must be at least 2 increasing edge fractions (a curve and its areas, CPR and CMD, "
                        f"need two points), got {list(fractions)}; e.g. MIB's {list(MIB_FRACTIONS)[:3]}...")
    _check_inputs(pairs, metric, batch_size, full, empty)
    _check_scored(graph, "faithfulness_curve")
    full = full_metric(model, pairs, metric, batch_size=batch_size) if full is None else full
    empty = empty_metric(model, graph, pairs, metric, batch_size=batch_size) if empty is None else empty
    circuit = graph.copy()
    if not absolute:  # the edge whose removal lowers the metric most first (see the module docstring)
        circuit.scores = -graph.scores
    n_edges, n_kept, chosen = [], [], []
    for p in fractions:
        n = int(p * graph.n_edges)
        circuits.apply_topn(circuit, n, absolute=absolute, prune=True)
        n_edges.append(n)
        n_kept.append(circuit.n_edges_in_graph)
        chosen.append(circuit.copy())
    with progress.task(f"faithfulness at {len(fractions)} circuit sizes"):
        # one call: the circuits share each batch's corrupted forward
        values = evaluate(model, chosen, pairs, metric, batch_size=batch_size).mean(dim=1).tolist()
    return FaithfulnessCurve(list(fractions), n_edges, n_kept, values, [normalised(v, full, empty) for v in values],
                             full, empty, absolute)


@dataclass
class MIBScores:
    """MIB's CPR (area under the curve, signed ranking; higher is better) and CMD (area between the curve and 1,
    |score| ranking; 0 is best), with both curves."""

    cpr: float
    cmd: float
    signed: FaithfulnessCurve
    absolute: FaithfulnessCurve


@checks.typed
def mib_scores(model: Model, graph: Graph, pairs: Pairs, metric: Metric = logit_diff, *,
               batch_size: int | None = None) -> MIBScores:
    """CPR and CMD of `graph`'s scores, computed as MIB computes them (see the module docstring). UserError as in
    `faithfulness_curve` (a graph with no edge scores, or a non-finite one, is refused before any forward)."""
    _check_inputs(pairs, metric, batch_size, None, None)
    _check_scored(graph, "mib_scores")
    full = full_metric(model, pairs, metric, batch_size=batch_size)
    empty = empty_metric(model, graph, pairs, metric, batch_size=batch_size)
    signed = faithfulness_curve(model, graph, pairs, metric, absolute=False, full=full, empty=empty,
                                batch_size=batch_size)
    absolute = faithfulness_curve(model, graph, pairs, metric, absolute=True, full=full, empty=empty,
                                  batch_size=batch_size)
    return MIBScores(signed.area, absolute.area_from_one, signed, absolute)
