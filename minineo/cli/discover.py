"""`minineo discover`: find a circuit (EAP, EAP-IG, clean-corrupted, exact edge scores, or ACDC), write it as
EAP-IG's graph file, report its faithfulness and MIB's curve (CPR, CMD), and plot it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minineo import checks
from minineo.cli.display import plural, titled_table
from minineo.cli.circuit_plot import circuit_figure
from minineo.cli.shared import (DeviceOption, ModelOption, app, check_options, console, load_or_exit, output_path,
                                plot_path, working)
from minineo.errors import UserError

SCORE_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact")
METHODS = SCORE_METHODS + ("acdc",)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not a method; give one of {', '.join(METHODS)}")
    return method


def check_reuse(circuit: Optional[Path], out: Optional[Path], **method_options) -> None:
    """--out is needed when a method runs (its scores are the result); with --from FILE nothing new is found, so
    --out is optional (the table and --plot re-use the file) and a method's own options are refused, not ignored.

    Raises UserError (MissingFileError for a --from file that is not there) naming the option and the fix."""
    if circuit is None:
        if out is None:
            raise UserError("--out is missing: a method's scores are written to a circuit file; give --out "
                            "circuit.json (or .pt), or --from FILE to re-use a circuit already written")
        return
    checks.existing_path(circuit, "--from", kind="file", fix="give the path of a circuit file (.json or .pt) that "
                         "minineo discover --out or EAP-IG wrote")
    given = [f"--{name}" for name, value in method_options.items() if value not in (None, False)]
    if given:
        raise UserError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for running a method, but --from "
                        f"{circuit} re-uses a circuit file as it is; drop {'it' if len(given) == 1 else 'them'}, or "
                        "drop --from to run the method")


def check_acdc_options(method: str, **acdc_options) -> None:
    """--kl and --state belong to ACDC; with a scoring method they would be ignored, so they are refused (UserError)."""
    given = [f"--{name}" for name, value in acdc_options.items() if value not in (None, False)]
    if given and method != "acdc":
        raise UserError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} ACDC's, but --method is {method}; "
                        f"drop {'it' if len(given) == 1 else 'them'}, or give --method acdc")


def check_not_empty(graph: Graph, threshold: float) -> None:
    """A --threshold that keeps no edge leaves a circuit whose faithfulness is 0 by construction: a UserError saying
    the largest |score| instead of a meaningless table."""
    if graph.n_edges_in_graph == 0:
        largest = float((graph.scores.abs() * graph.real_edges).max())
        raise UserError(f"--threshold {threshold:g} keeps no edge: the largest |score| is {largest:.4g}; give a "
                        "smaller --threshold, or --top N")


def curve_table(signed, absolute, title: str):
    """The faithfulness curve at MIB's fractions, both rankings, with CPR and CMD in the caption."""
    table = titled_table(title)
    # each ranking keeps its own edges after pruning, so each f column has its own count beside it (fits 80 columns)
    for column in ("fraction", "top edges", "kept |score|", "f |score|", "kept -score", "f -score"):
        table.add_column(column, justify="right")
    for i, p in enumerate(absolute.fractions):
        table.add_row(f"{p:g}", str(absolute.n_edges[i]), str(absolute.n_kept[i]), f"{absolute.faithfulness[i]:.3f}",
                      str(signed.n_kept[i]), f"{signed.faithfulness[i]:.3f}")
    table.caption = (f"top edges: int(fraction x all edges); kept: left after pruning, edges ranked by |score| or "
                     f"by -score; f = (m(C) - m(empty)) / (m(full) - m(empty)); CPR (area under f -score, higher is "
                     f"better) {signed.area:.3f}; CMD (area between f |score| and 1, 0 is best) "
                     f"{absolute.area_from_one:.3f}")
    return table


@app.command("discover")
def discover(model: str = ModelOption,
             task: str = typer.Option("ioi", help="ioi, induction, or a JSONL of {clean, corrupted, answer, wrong} rows"),
             method: str = typer.Option("eap-ig-inputs", help=f"{', '.join(METHODS)}"),
             top: int = typer.Option(20, help="edges in the circuit (at least 1), by |score| (before pruning); not "
                                     "for acdc"),
             out: Optional[Path] = typer.Option(None, "--out", help="write EAP-IG's graph file here (.json or .pt): "
                                                "every edge's score, the circuit as in_graph; needed when a method "
                                                "runs, optional with --from"),
             plot: Optional[Path] = typer.Option(None, "--plot", help="draw the circuit and its faithfulness curve"),
             ig_steps: int = typer.Option(5, help="integrated-gradient steps (eap-ig-inputs, eap-ig-activations)"),
             threshold: Optional[float] = typer.Option(None, help="acdc: the largest change (normalised metric "
                                                       "units; nats with --kl) an edge may make and be removed "
                                                       "(default 0.01); score methods: keep edges with |score| >= "
                                                       "this instead of --top"),
             kl: bool = typer.Option(False, "--kl", help="acdc: threshold the KL divergence from the clean run"),
             state: Optional[Path] = typer.Option(None, help="acdc: a state file to resume from and write to"),
             circuit: Optional[Path] = typer.Option(None, "--from", help="read a circuit file (EAP-IG's .json or .pt) "
                                                    "instead of running a method: its scores and circuit"),
             n: int = typer.Option(32, "--n", help="pairs for ioi / induction"),
             seed: int = typer.Option(0, help="seed of the ioi / induction pairs"),
             batch_size: Optional[int] = typer.Option(None, help="pairs per forward pass (default: all)"),
             device: str = DeviceOption) -> None:
    """Find the circuit of a task: the edges between embeddings, heads' q/k/v inputs, MLPs and logits that carry it.

    Prints m(full) (the clean run's mean logit difference answer - wrong at the last position), m(empty) (every edge
    corrupted), the circuit's size after pruning and its faithfulness (m(C) - m(empty)) / (m(full) - m(empty)), and
    the faithfulness curve at MIB's edge fractions with CPR and CMD."""
    from minineo import discovery
    from minineo.discovery import circuits, files, tasks
    from minineo.discovery.faithfulness import empty_metric, faithfulness, faithfulness_curve, full_metric, normalised

    check_method(method)
    check_options(top=(top, ">= 1"), ig_steps=(ig_steps, ">= 1"), threshold=(threshold, ">= 0"), n=(n, ">= 1"),
                  seed=(seed, ">= 0"), batch_size=(batch_size, ">= 1"))
    check_reuse(circuit, out, threshold=threshold, kl=kl, state=state)
    check_acdc_options(method, kl=kl, state=state)
    out = None if out is None else output_path(out, "circuit file", files.SUFFIXES, default_suffix=".json")
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    graph = discovery.Graph.from_model(m)
    if top > graph.n_edges:
        raise UserError(f"--top must be between 1 and the model's {graph.n_edges} edges, got {top}")
    with working(f"tokenizing the {task} pairs"):
        pairs = tasks.task_pairs(m, task, n, seed)
    with working("m(full) and m(empty)"):
        full = full_metric(m, pairs, batch_size=batch_size)
        empty = empty_metric(m, graph, pairs, batch_size=batch_size)
    normalised(full, full, empty)  # a UserError when both runs agree
    if circuit is not None:
        graph = files.load_graph(circuit, m)
        if graph.model is None:  # EAP-IG's own files name no model; this one fits its shape and is evaluated on it
            graph.model = m.source
        how = f"read from {circuit}"
    elif method == "acdc":
        graph = discovery.acdc(m, pairs, threshold=threshold, kl=kl, state=state, batch_size=batch_size, graph=graph)
        how = f"ACDC, threshold {threshold if threshold is not None else 0.01:g}{' (KL)' if kl else ''}"
    else:
        from minineo.discovery.attribution import attribute

        with working(f"{method} scores of {plural(graph.n_edges, 'edge')}"):
            attribute(m, graph, pairs, method=method, ig_steps=ig_steps, batch_size=batch_size)
        if threshold is not None:
            circuits.apply_threshold(graph, threshold, absolute=True, prune=False)
            check_not_empty(graph, threshold)
            how = f"{method}, |score| >= {threshold:g}"
        else:
            circuits.apply_topn(graph, top, absolute=True, prune=False)
            how = f"{method}, top {top} by |score|"
    before, after = circuits.prune(graph)
    value = faithfulness(m, graph, pairs, full=full, empty=empty, batch_size=batch_size)
    signed = faithfulness_curve(m, graph, pairs, absolute=False, full=full, empty=empty, batch_size=batch_size)
    absolute = faithfulness_curve(m, graph, pairs, absolute=True, full=full, empty=empty, batch_size=batch_size)
    if out is not None:  # the |score| curve, the ranking of the view's slider, goes in the file for view-circuit
        files.save_graph(graph, out, curve=absolute)
    console.print(f"{task} on {model}: {plural(len(pairs), 'pair')}; m(full) {full:+.3f}, m(empty) {empty:+.3f} "
                  "(mean logit difference answer - wrong at the last position)")
    console.print(f"circuit ({how}): {plural(before, 'edge')}, {after} after pruning, "
                  f"{plural(int(graph.nodes_in_graph.sum()), 'node')}; faithfulness {value:.3f}")
    console.print(curve_table(signed, absolute, f"faithfulness curve of the {method if circuit is None else 'file'} "
                                                "scores (MIB's edge fractions)"))
    if out is not None:
        console.print(f"wrote {out}")
    if plot:
        circuit_figure(graph, absolute, plot, f"{model}, {task}: {how}; faithfulness {value:.3f}")
        console.print(f"wrote {plot}")


@app.command("discover-compare")
def discover_compare(models: list[str] = typer.Option(["tiny-neo", "tiny-gpt2"], "--model", "-m",
                                                       help="models to compare (repeat the option)")) -> None:
    """The IOI and induction circuits of each model side by side (minineo.discovery.compare): ACDC's circuit size
    and faithfulness, EAP's and EAP-IG's at the same size, the heads in, the share of edge score through MLPs.
    Prints the Markdown table docs/discovery.md quotes."""
    from minineo.discovery.compare import table

    with working("ACDC, EAP and EAP-IG on every model and task"):
        console.print(table(list(models)), soft_wrap=True, markup=False, highlight=False)
