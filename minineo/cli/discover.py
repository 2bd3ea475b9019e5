"""`minineo discover`: find a circuit (EAP, EAP-IG, clean-corrupted, exact edge scores, or ACDC), write it as
EAP-IG's graph file, report its faithfulness and MIB's curve (CPR, CMD), and plot it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import math

from minineo import checks, report
from minineo.cli.display import plural, titled_table
from minineo.cli.circuit_plot import circuit_figure, fixed
from minineo.cli.shared import (DeviceOption, ModelOption, app, check_options, console, load_or_exit, output_path,
                                plot_path, working)
from minineo.discovery.files import KL_UNIT, LOGIT_UNIT  # the file's task["score_unit"]
from minineo.errors import EmptyCircuitError, UserError

SCORE_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact")
METHODS = SCORE_METHODS + ("acdc",)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not a method; give one of {', '.join(METHODS)}")
    return method


# Which options apply where. An option the user gives that does not apply is refused, never ignored.
OPTION_USE = {  # option: (whose it is, the methods it applies to)
    "top": ("for the score methods (ACDC's circuit is what its --threshold keeps)", SCORE_METHODS),
    "ig_steps": ("for eap-ig-inputs and eap-ig-activations", ("eap-ig-inputs", "eap-ig-activations")),
    "threshold": ("for every method", METHODS),
    "kl": ("ACDC's", ("acdc",)),
    "state": ("ACDC's", ("acdc",)),
}
RUN_OPTIONS = ("method",) + tuple(OPTION_USE)  # nothing runs with --from: each of these is refused there
PAIR_OPTIONS = ("n", "seed")  # they make the ioi / induction pairs; a JSONL task holds its own


def _flags(names) -> str:
    names = [f"--{name.replace('_', '-')}" for name in names]
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def _them(names) -> str:
    return "it" if len(names) == 1 else "them"


def check_applicable(given: set[str], method: str, circuit: Optional[Path], task: str) -> None:
    """UserError (one line) for any option in `given` (the parameter names the user set) that does not apply to this
    method, to re-using a circuit file (--from), or to this task; OPTION_USE says which option applies where."""
    if circuit is not None:
        wrong = [name for name in RUN_OPTIONS if name in given]
        if wrong:
            raise UserError(f"{_flags(wrong)} for running a method, but --from {circuit} re-uses a circuit file as it "
                            f"is; drop {_them(wrong)}, or drop --from to run the method")
    else:
        wrong = [name for name, (_, methods) in OPTION_USE.items() if name in given and method not in methods]
        if wrong:
            whose = "; ".join(f"{_flags([name])} {OPTION_USE[name][0]}" for name in wrong)
            raise UserError(f"{whose}, but --method is {method}; drop {_them(wrong)}, or give a method "
                            f"{'it applies' if len(wrong) == 1 else 'they apply'} to")
        if method != "acdc" and {"top", "threshold"} <= given:
            raise UserError("--top and --threshold both choose the circuit's edges (the top N by |score|, or every "
                            "edge with |score| >= the threshold); give one of them")
    from minineo.discovery.tasks import is_file_task

    if is_file_task(task):
        wrong = [name for name in PAIR_OPTIONS if name in given]
        if wrong:
            raise UserError(f"{_flags(wrong)} for the built-in tasks (ioi, induction), but --task {task} reads its "
                            f"pairs from the file; drop {_them(wrong)}")


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters the user set (on the command line or through the environment), not left at their defaults."""
    def source(name: str) -> str:  # by name: typer may carry its own copy of click's ParameterSource enum
        found = ctx.get_parameter_source(name)
        return "DEFAULT" if found is None else found.name

    return {name for name in ctx.params if source(name) not in ("DEFAULT", "DEFAULT_MAP")}


def check_reuse(circuit: Optional[Path], out: Optional[Path]) -> None:
    """--out is needed when a method runs (its scores are the result); with --from FILE nothing new is found, so
    --out is optional (the table and --plot re-use the file).

    Raises UserError (MissingFileError for a --from file that is not there) naming the option and the fix."""
    if circuit is None:
        if out is None:
            raise UserError("--out is missing: a method's scores are written to a circuit file; give --out "
                            "circuit.json (or .pt), or --from FILE to re-use a circuit already written")
        return
    checks.existing_path(circuit, "--from", kind="file", fix="give the path of a circuit file (.json or .pt) that "
                         "minineo discover --out or EAP-IG wrote")


DEFAULT_BATCH = 32  # pairs per forward: memory stays bounded (about 3.6 MB a pair at once on eap-ig-inputs)
LARGE_RUN = 1000  # pairs past which the cost is said up front


def task_record(task: str, n: int, seed: int, pairs) -> dict:
    """The "task" key of the written file (files.task_document): what the scores were computed on."""
    from minineo.discovery import files, tasks
    from minineo.discovery.acdc import pairs_fingerprint

    more = {} if tasks.is_file_task(task) else {"n": n, "seed": seed}
    return files.task_document(task, len(pairs), pairs_fingerprint(pairs), **more)


def task_text(record: dict) -> str:
    name = record["name"]
    if "n" in record and "seed" in record:
        return f"--task {name} --n {record['n']} --seed {record['seed']}"
    return f"--task {name} ({record['n_pairs']} pairs)"


def say_other_pairs(circuit: Path, extras: dict, here: dict) -> None:
    """One line on stderr when the --from file was found on other pairs than the ones it is evaluated on now."""
    from minineo import report

    found = extras.get("task")
    if found is not None and found["pairs"] != here["pairs"]:
        report.warn(f"--from {circuit} was found on {task_text(found)}; it is evaluated here on other pairs, "
                    f"{task_text(here)}, so its faithfulness can differ from the one at discovery; give "
                    f"{task_text(found)} to evaluate it on its own pairs")


def read_circuit(circuit: Path, m, model: str, model_given: bool):
    """(the graph, the file's extra keys: graph.extras, which a copy written with --out keeps) of the --from file,
    checked against the model. A file that names no model (EAP-IG's own) can be checked by shape
    only: the user must say which model it was found on (--model, given explicitly); it is then marked as asserted
    (`cfg.model_asserted` in a copy written with --out), and stderr says the file carried no identity."""
    from minineo import report
    from minineo.discovery import files

    with report.collect():  # load_graph's own note on a file without identity: said below, in the command's words
        graph = files.load_graph(circuit, m)
    if graph.model is None:
        if not model_given:
            raise UserError(f"--from {circuit} carries no model identity (EAP-IG's own files name none), so whether "
                            "it was found on this model cannot be checked; say which model it was found on with "
                            "--model NAME")
        graph.model, graph.model_asserted = m.source, True
        report.warn(f"--from {circuit} carries no model identity; checked by shape only, and taken as {model}'s "
                    "because --model says so (a copy written with --out records the model as asserted)")
    return graph, graph.extras


def score_unit_words(record: dict | None) -> str | None:
    """The scores' unit as the plot's width scale says it, from the file's "task" record (its score_unit); None
    where the file records none (EAP-IG's own files): the legend then states no unit."""
    unit = record.get("score_unit") if isinstance(record, dict) else None
    if not isinstance(unit, str):
        return None
    return {KL_UNIT: "nats (KL)", LOGIT_UNIT: "(logit difference)"}.get(unit, f"({unit})")


def curve_table(signed, absolute, title: str, sign: str = "-"):
    """The faithfulness curve at MIB's fractions, both rankings, with CPR and CMD in the caption. `sign`: the signed
    ranking's, "-" (a logit difference: removing a needed edge lowers it) or "+" (a KL divergence: it raises it)."""
    table = titled_table(title)
    # each ranking keeps its own edges after pruning, so each f column has its own count beside it (fits 80 columns)
    for column in ("fraction", "top edges", "kept |score|", "f |score|", f"kept {sign}score", f"f {sign}score"):
        table.add_column(column, justify="right")
    for i, p in enumerate(absolute.fractions):
        table.add_row(f"{p:g}", str(absolute.n_edges[i]), str(absolute.n_kept[i]), fixed(absolute.faithfulness[i]),
                      str(signed.n_kept[i]), fixed(signed.faithfulness[i]))
    table.caption = (f"top edges: int(fraction x all edges); kept: left after pruning, edges ranked by |score| or "
                     f"by {sign}score; f = (m(C) - m(empty)) / (m(full) - m(empty)); CPR (area under f {sign}score, higher is "
                     f"better) {fixed(signed.area)}; CMD (area between f |score| and 1, 0 is best) "
                     f"{fixed(absolute.area_from_one)}")
    return table


@app.command("discover")
def discover(ctx: typer.Context, model: str = ModelOption,
             task: str = typer.Option("ioi", help="ioi, induction, or a JSONL of {clean, corrupted, answer, wrong} rows"),
             method: str = typer.Option("eap-ig-inputs", help=f"{', '.join(METHODS)}"),
             top: int = typer.Option(20, help="edges in the circuit (at least 1), by |score| (before pruning); not "
                                     "for acdc"),
             out: Optional[Path] = typer.Option(None, "--out", help="write EAP-IG's graph file here (.json or .pt): "
                                                "every edge's score, the circuit as in_graph; needed when a method "
                                                "runs, optional with --from"),
             plot: Optional[Path] = typer.Option(None, "--plot", help="draw the circuit and its faithfulness curve"),
             ig_steps: int = typer.Option(5, help="integrated-gradient steps (eap-ig-inputs, eap-ig-activations): "
                                          "1..1000; past 100 the run says its cost on stderr first"),
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
             batch_size: Optional[int] = typer.Option(None, help=f"pairs per forward pass (default "
                                                     f"{DEFAULT_BATCH}: memory stays bounded; the results do not "
                                                     "depend on it beyond float round-off)"),
             device: str = DeviceOption) -> None:
    """Find the circuit of a task: the edges between embeddings, heads' q/k/v inputs, MLPs and logits that carry it.

    Prints m(full) (the clean run's mean logit difference answer - wrong at the last position), m(empty) (every edge
    corrupted), the circuit's size after pruning and its faithfulness (m(C) - m(empty)) / (m(full) - m(empty)), and
    the faithfulness curve at MIB's edge fractions with CPR and CMD."""
    from minineo import discovery
    from minineo.discovery import circuits, files, tasks
    from minineo.discovery.attribution import MAX_IG_STEPS
    from minineo.discovery.faithfulness import empty_metric, faithfulness, faithfulness_curve, full_metric, normalised
    from minineo.discovery.pairs import check_prompts_differ

    check_method(method)
    given = given_options(ctx)
    check_applicable(given, method, circuit, task)
    check_options(top=(top, ">= 1"), ig_steps=(ig_steps, f"1..{MAX_IG_STEPS}", "EAP-IG's default is 5"),
                  threshold=(threshold, ">= 0"), n=(n, ">= 1"), seed=(seed, ">= 0"), batch_size=(batch_size, ">= 1"))
    check_reuse(circuit, out)
    out = None if out is None else output_path(out, "--out circuit file", files.SUFFIXES, default_suffix=".json", kind="circuit")
    plot = plot_path(plot)
    if state is not None:  # claimed (another run's collision names its pid) and checked before any work
        from minineo.discovery.acdc import load_state

        state = output_path(state, "--state file")
        load_state(state)
    batch_size = batch_size or DEFAULT_BATCH
    m = load_or_exit(model, device)
    graph = discovery.Graph.from_model(m)
    if top > graph.n_edges:
        raise UserError(f"--top must be between 1 and the model's {graph.n_edges} edges, got {top}")
    with working(f"tokenizing the {task} pairs"):
        pairs = tasks.task_pairs(m, task, n, seed)
    if len(pairs) > LARGE_RUN:
        report.warn(f"{len(pairs)} pairs: every pass runs in {math.ceil(len(pairs) / batch_size)} batches of "
                    f"{batch_size} (--batch-size), and the time grows with the pairs (thousands take minutes, "
                    f"ACDC far longer); give a smaller --n (or fewer rows) for a quick look")
    check_prompts_differ(pairs, name=f"--task {task}")  # the gap below would be 0, whatever the answers
    with working("m(full) and m(empty)"):
        full = full_metric(m, pairs, batch_size=batch_size)
        empty = empty_metric(m, graph, pairs, batch_size=batch_size)
    normalised(full, full, empty)  # a UserError when both runs agree
    for message in checks.metric_gap_warnings(full, empty, "m(full)", "m(empty)"):
        report.warn(f"{message} (faithfulness is normalised by m(full) - m(empty))")
    record = task_record(task, n, seed, pairs)
    kl_scores = method == "acdc" and kl and circuit is None
    if circuit is None:  # what the scores mean (a --from file keeps its own record, below)
        record.update(method=method, score_unit=KL_UNIT if kl_scores else LOGIT_UNIT)
    if circuit is not None:
        graph, extras = read_circuit(circuit, m, model, "model" in given)
        say_other_pairs(circuit, extras, record)
        record = extras.get("task")  # a copy keeps what its scores were computed on (None: not recorded, as EAP-IG's)
        how = f"read from {circuit}"
    elif method == "acdc":
        try:
            graph = discovery.acdc(m, pairs, threshold=threshold, kl=kl, state=state, batch_size=batch_size,
                                   graph=graph, on_empty="raise")
        except EmptyCircuitError as err:  # in this command's words: its option is --threshold
            raise UserError(f"ACDC's --threshold {threshold if threshold is not None else 0.01:g} keeps no edge "
                            f"({err.reason}); an empty circuit is the corrupted run, not a finding; give a smaller "
                            "--threshold") from None
        how = f"ACDC, threshold {threshold if threshold is not None else 0.01:g}{' (KL)' if kl else ''}"
    else:
        from minineo.discovery.attribution import attribute

        with working(f"{method} scores of {plural(graph.n_edges, 'edge')}"):
            attribute(m, graph, pairs, method=method, ig_steps=ig_steps, batch_size=batch_size)
        if threshold is not None:
            circuits._threshold(graph, threshold, True, False, "--threshold")  # keeps no edge: a UserError
            how = f"{method}, |score| >= {threshold:g}"
        else:
            circuits.apply_topn(graph, top, absolute=True, prune=False)
            how = f"{method}, top {top} by |score|"
    before, after = circuits.prune(graph)
    if not after:
        if circuit is not None:
            report.warn(f"the circuit of --from {circuit} has no edge after pruning: its faithfulness is 0 by "
                        "construction (the corrupted run), not a finding")
        elif threshold is not None:  # apply_threshold refused a threshold keeping nothing; pruning emptied it
            report.warn(f"--threshold {threshold:g} keeps {plural(before, 'edge')} but none after pruning (none lies "
                        "on a path from input to logits), so the circuit is empty and its faithfulness 0 by "
                        "construction, not a finding; give a smaller --threshold, or --top N")
        else:
            report.warn(f"--top {top} keeps no edge after pruning (its {plural(before, 'edge')} {'lies' if before == 1 else 'lie'} on no path from "
                        "input to logits), so the circuit is empty and its faithfulness 0 by construction, not a "
                        "finding; give a larger --top")
    value = faithfulness(m, graph, pairs, full=full, empty=empty, batch_size=batch_size)
    if record is not None and record.get("score_unit") == KL_UNIT:
        kl_scores = True  # (a --from file scored by ACDC with --kl)
    # the signed ranking puts first the edge whose removal hurts most: the most negative logit-difference score,
    # but the most positive KL score (removing a needed edge raises the KL from the clean run)
    ranked = graph.copy() if kl_scores else graph
    if kl_scores:
        ranked.scores = -graph.scores
    signed = faithfulness_curve(m, ranked, pairs, absolute=False, full=full, empty=empty, batch_size=batch_size)
    absolute = faithfulness_curve(m, graph, pairs, absolute=True, full=full, empty=empty, batch_size=batch_size)
    if out is not None:  # the |score| curve, the ranking of the view's slider, goes in the file for view-circuit;
        # a --from file's other extra keys (graph.extras) are kept as they are
        files.save_graph(graph, out, curve=absolute, computed_on=record)
    console.print(f"{task} on {model}: {plural(len(pairs), 'pair')}; m(full) {fixed(full, signed=True)}, m(empty) "
                  f"{fixed(empty, signed=True)} "
                  "(mean logit difference answer - wrong at the last position)")
    console.print(f"circuit ({how}): {plural(before, 'edge')}, {after} after pruning, "
                  f"{plural(int(graph.nodes_in_graph.sum()), 'node')}; faithfulness {fixed(value)}")
    console.print(curve_table(signed, absolute, f"faithfulness curve of the {method if circuit is None else 'file'} "
                                                "scores (MIB's edge fractions)", "+" if kl_scores else "-"))
    if out is not None:
        console.print(f"wrote {out}")
    if plot:
        unit = score_unit_words(record)
        circuit_figure(graph, absolute, plot, f"{model}, {task}: {how}; faithfulness {fixed(value)}", unit, record)
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
