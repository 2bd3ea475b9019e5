"""`minineo circuits`: composition between heads and copying scores, read from the weights alone."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape

from minineo import analysis
from minineo.analysis.circuits import KINDS
from minineo.cli import plots
from minineo.cli.display import number, titled_table
from minineo.cli.shared import DeviceOption, ModelOption, app, check_positive, console, fail, load_or_exit, plot_path

PlotOption = typer.Option(None, "--plot", help="write the (layer, head) x (layer, head) heatmap to this path "
                                               "(.png, .pdf, .svg or .jpg; no extension: .png)")
READS = {"q": "queries", "k": "keys", "v": "values"}


@app.command()
def circuits(
    model: str = ModelOption,
    kind: str = typer.Option("k", "--kind", help="which input of the later head: q (queries), k (keys), v (values)"),
    processed: bool = typer.Option(False, "--processed", help="score TransformerLens's processed weights "
                                   "(model.processed(): LayerNorms folded, writing weights and W_U centred, value "
                                   "biases folded) instead of the raw checkpoint"),
    top: int = typer.Option(10, help="pairs and heads to list"),
    plot: Optional[Path] = PlotOption, device: str = DeviceOption,
) -> None:
    """Circuits on the weights: the strongest composition pairs (Elhage et al. 2021) and each head's copying score."""
    check_positive(top=top)
    kind = kind.lower()
    if kind not in KINDS:
        fail(f"--kind {kind!r} is not one of q (queries), k (keys), v (values)")
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    if m.config.n_layers < 2:
        fail(f"{model} has one layer: composition needs a head in a later layer than another")
    weights = m.processed() if processed else m
    which = "processed" if processed else "raw"
    with torch.inference_mode():
        scores = analysis.composition_scores(weights, kind, fill=float("nan"))  # (layer, head, layer, head)
        copying = analysis.copying_scores(weights)  # (layer, head)
    n_heads = m.config.n_heads
    table = titled_table(f"{kind.upper()}-composition on {escape(model)}'s {which} weights: how much a later head's "
                         f"{READS[kind]} read an earlier head's output")
    for column, justify in (("sender (writes)", "left"), ("receiver (reads)", "left"), ("score", "right")):
        table.add_column(column, justify=justify)
    flat = scores.flatten()
    for index in _ranked(flat)[:top]:  # unscored pairs (NaN) are never ranked or printed as scores
        l1, h1, l2, h2 = torch.unravel_index(torch.tensor(index), scores.shape)
        table.add_row(f"L{l1}H{h1}", f"L{l2}H{h2}", number(float(flat[index])))
    console.print(table)
    second = "W_OV'" if kind == "v" else "W_QK"
    formula = {"q": "W_OV W_QK", "k": "W_OV W_QK^T", "v": "W_OV W_OV'"}[kind]
    n_scored = int((~scores.isnan()).sum())
    listed = f"all {n_scored} scored pairs listed (--top {top}); " if top > n_scored else ""
    console.print(f"score = ||{formula}||_F / (||W_OV||_F ||{second}||_F), from 0 (orthogonal) to at most 1; "
                  f"{listed}{int(scores.isnan().sum())} pairs whose receiver is not in a later layer are not scored")
    table = titled_table(f"copying scores on the {which} weights: sum(λ) / sum(|λ|) over the eigenvalues of "
                         "W_E W_V W_O W_U (1 = copies the attended token)")
    table.add_column("head")
    table.add_column("copying score", justify="right")
    for index in _ranked(copying.flatten())[:top]:
        layer, head = divmod(index, n_heads)
        table.add_row(f"L{layer}H{head}", number(float(copying[layer, head])))
    console.print(table)
    unscored = int(copying.isnan().sum())
    console.print(f"{int((copying > 0.5).sum())} of {copying.numel()} heads score above 0.5"
                  + (f"; {unscored} heads have no copying score (an all-zero OV circuit)" if unscored else ""))
    if plot:
        plots.composition_heatmap(scores, plot, f"{kind.upper()}-composition between heads, {model} ({which} weights)",
                                  label=f"{kind.upper()}-composition score (||A B||_F / (||A||_F ||B||_F))")
        console.print(f"wrote {escape(str(plot))}")


def _ranked(values: torch.Tensor) -> list[int]:
    """Indices of the finite entries of a flat tensor, highest first (NaN marks an entry that was not scored)."""
    scored = values.isfinite().nonzero().flatten()
    return scored[values[scored].argsort(descending=True)].tolist()
