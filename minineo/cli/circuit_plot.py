"""`minineo discover --plot`: the circuit as a layered graph beside its faithfulness curve.

Rows from the bottom: `input`, then per layer a row of heads and above it the layer's MLP, `logits` on top. Every
node of the model is a faint dot; the circuit's nodes are boxes. A head's box has its name on top and three cells
below, q, k and v: an edge into the head ends at the cell of the input it feeds (a used cell is shaded), so query,
key and value composition read apart at 12 x 12 heads. An edge's width follows |score| (the legend gives the scale
in the scores' unit, none where the file records no unit; with no edge drawn it says so and gives none)
and its colour the sign, as the HTML circuit view draws them: blue for a score < 0 (removing the edge lowers the
metric), red for a score > 0. The legend words both, and says what a score is, from the file's "task" record (its
method and unit: minineo.views.circuit.score_key, the page's words): with a logit difference blue marks an edge the
circuit needs, with ACDC's KL divergence from the clean run (higher is worse) red does.
"""

from __future__ import annotations

from pathlib import Path

import textwrap
from typing import Any

from minineo.cli import plots
from minineo.cli.display import number
from minineo.discovery.faithfulness import FaithfulnessCurve
from minineo.discovery.graph import Graph
from minineo.views.circuit import ScoreKey, score_key

NEGATIVE, POSITIVE = "#2166ac", "#b2182b"  # the HTML view's blue and red (minineo/views/assets/circuit.js)
PORTS = ("q", "k", "v")
BOX_W, BOX_H = 0.84, 0.9  # a head's box, in columns (one per head) and rows (two per layer)
NODE_H = 0.5  # the box of `input`, an MLP or `logits` (as wide as a head's)
NAME_PT, PORT_PT, AXIS_PT = 9.5, 9.0, 9.0  # legible at 120 dpi: 16, 15 and 15 pixels high
MIN_WIDTH, MAX_WIDTH = 0.6, 6.0  # points: the weakest and the strongest edge drawn
HEAD_FILL, PORT_FILL, PORT_USED = "#fff8dc", "#ffffff", "#f2c14e"
COLOUR_COLUMNS = 48  # characters a line of a colour's legend entry in a legend of three columns
WIDE = 11.0  # inches: a figure this wide has its legend in three columns; a narrower one in one (and is taller)


def fixed(value: float, digits: int = 3, signed: bool = False) -> str:
    """`value` at `digits` decimals (with its sign when `signed`), as the plot and `minineo discover` print
    faithfulness: a value that rounds to zero prints as 0.000 (+0.000), never -0.000."""
    return number(value, digits, signed)


def positions(graph: Graph) -> dict[str, tuple[float, float]]:
    """Node name -> (x, y) centre: heads in columns, `input`, the MLPs and `logits` in the middle; `input` and
    `logits` a row further out than an MLP, so their edges to the nearest heads do not run flat."""
    middle = (graph.n_heads - 1) / 2
    pos = {"input": (middle, -0.5)}
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            pos[f"a{layer}.h{head}"] = (float(head), 1.0 + 2 * layer)
        pos[f"m{layer}"] = (middle, 2.0 + 2 * layer)
    pos["logits"] = (middle, 1.5 + 2 * graph.n_layers)
    return pos


def port_x(x: float, port: str) -> float:
    """The centre of a head box's q, k or v cell."""
    return x + (PORTS.index(port) - 1) * BOX_W / 3


def edge_ends(name: str, pos: dict[str, tuple[float, float]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(start, end) of an edge: from the top of its sender to the bottom of its receiver (a head: its port's cell)."""
    sender, receiver = name.split("->")
    node, port = (receiver[:-3], receiver[-2]) if receiver.endswith(">") else (receiver, None)
    (x0, y0), (x1, y1) = pos[sender], pos[node]
    start = (x0, y0 + (BOX_H / 2 if sender.startswith("a") else NODE_H / 2))
    return start, (port_x(x1, port) if port else x1, y1 - (BOX_H / 2 if port else NODE_H / 2))


def circuit_edges(graph: Graph) -> list[tuple[str, float]]:
    """(edge name, score) of every edge in the circuit, weakest first (so the strongest are drawn on top)."""
    edges = [(name, float(graph.scores[s, r])) for name, s, r in graph.edges() if graph.in_graph[s, r]]
    return sorted(edges, key=lambda edge: abs(edge[1]))


def edge_style(score: float, top: float) -> dict:
    strength = abs(score) / top
    return {"linewidth": MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * strength, "alpha": 0.35 + 0.6 * strength,
            "color": NEGATIVE if score < 0 else POSITIVE}


def _draw_edges(ax, edges: list[tuple[str, float]], pos, top: float) -> None:
    from matplotlib.collections import LineCollection

    if not edges:
        return
    styles = [edge_style(score, top) for _, score in edges]
    ax.add_collection(LineCollection([edge_ends(name, pos) for name, _ in edges], zorder=2, capstyle="round",
                                     linewidths=[s["linewidth"] for s in styles],
                                     colors=[(*_rgb(s["color"]), s["alpha"]) for s in styles], gid="edges"))


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def _draw_head(ax, name: str, x: float, y: float, used: set[str]) -> None:
    """A head's box: its name on the upper half, the q, k, v cells on the lower half (shaded where an edge ends)."""
    from matplotlib.patches import Rectangle

    left, bottom = x - BOX_W / 2, y - BOX_H / 2
    ax.add_patch(Rectangle((left, bottom), BOX_W, BOX_H, fc=HEAD_FILL, ec="black", lw=0.9, zorder=4))
    ax.text(x, y + BOX_H / 4, name, ha="center", va="center", fontsize=NAME_PT, zorder=6, gid=f"node {name}")
    for i, port in enumerate(PORTS):
        ax.add_patch(Rectangle((left + i * BOX_W / 3, bottom), BOX_W / 3, BOX_H / 2, zorder=5, lw=0.7, ec="black",
                               fc=PORT_USED if port in used else PORT_FILL))
        ax.text(port_x(x, port), bottom + BOX_H / 4, port, ha="center", va="center", fontsize=PORT_PT,
                fontweight="bold", zorder=6, gid=f"port {name}<{port}>")


def _draw_nodes(ax, graph: Graph, pos, edges: list[tuple[str, float]]) -> None:
    in_nodes = {n for n, keep in zip(graph.sender_names, graph.nodes_in_graph.tolist()) if keep} | {"logits"}
    used: dict[str, set[str]] = {}
    for name, _ in edges:
        receiver = name.split("->")[1]
        if receiver.endswith(">"):
            used.setdefault(receiver[:-3], set()).add(receiver[-2])
    for name, (x, y) in pos.items():
        if name not in in_nodes:
            ax.plot([x], [y], "o", color="#cccccc", ms=3, zorder=1)
        elif name.startswith("a"):
            _draw_head(ax, name, x, y, used.get(name, set()))
        else:
            _draw_node(ax, name, x, y)


def _draw_node(ax, name: str, x: float, y: float) -> None:
    """`input`, an MLP or `logits`: a box as wide as a head's, edges meeting its top and bottom."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x - BOX_W / 2, y - NODE_H / 2), BOX_W, NODE_H, zorder=4, lw=0.9, ec="black",
                           fc="#d8ecd8" if name[0] == "m" else "#e6e6e6"))
    ax.text(x, y, name, ha="center", va="center", fontsize=NAME_PT, zorder=6, gid=f"node {name}")


def _legend(fig, top: float | None, unit: str | None, key: ScoreKey) -> None:
    """What colour and width mean (with the |score| scale in `unit`; None: a file that records no unit, and none is
    stated) and where an edge into a head ends, under a title saying what a score is (`key`: the page's words). With
    no edge drawn (`top` None) there is no width scale to give, and the legend says so instead of inventing one."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    columns = int(fig.get_figwidth() * 72 / (0.55 * AXIS_PT))  # characters across the figure
    ncol = 3 if fig.get_figwidth() >= WIDE else 1
    wrap = COLOUR_COLUMNS if ncol == 3 else columns - 10  # less the handle
    handles = [Line2D([], [], color=NEGATIVE, lw=3, label=textwrap.fill(key.negative, wrap)),
               Line2D([], [], color=POSITIVE, lw=3, label=textwrap.fill(key.positive, wrap))]
    if top is None:
        handles.append(Line2D([], [], color="none", label="no edge in the circuit: no width scale"))
    else:
        for share in (1.0, 0.5, 0.1):
            width = edge_style(share * top, top)["linewidth"]
            handles.append(Line2D([], [], color="#555555", lw=width, label=f"width: |score| {share * top:.3g}{' ' + unit if unit else ''}"
                                  + (" (the largest)" if share == 1.0 else "")))
    handles.append(Patch(fc=PORT_USED, ec="black", label="q / k / v cell of a head: the input an edge feeds"))
    fig.legend(handles=handles, loc="outside lower left", fontsize=AXIS_PT, frameon=False, ncol=ncol, handlelength=3,
               title=textwrap.fill(key.sentence, columns), title_fontsize=AXIS_PT, alignment="left")


def _graph_panel(ax, graph: Graph) -> float | None:
    """Draw the layered graph on `ax`; returns the largest |score| drawn (the width scale's top), None when no edge
    (or only edges of score 0) is drawn."""
    pos = positions(graph)
    edges = circuit_edges(graph)
    top = max((abs(score) for _, score in edges), default=0.0) or None
    _draw_edges(ax, edges, pos, top or 1.0)
    _draw_nodes(ax, graph, pos, edges)
    L = graph.n_layers
    ax.set_xlim(-0.6, graph.n_heads - 0.4)
    ax.set_ylim(-1.0, 2 * L + 2.0)
    ax.set_yticks([-0.5] + [1 + 2 * layer for layer in range(L)] + [2 * L + 1.5],
                  ["input"] + [f"layer {layer}" for layer in range(L)] + ["logits"], fontsize=AXIS_PT)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"circuit: {graph.n_edges_in_graph} edges, {int(graph.nodes_in_graph.sum())} nodes\n"
                 "rows: layers, input at the bottom", fontsize=11)
    return top


def _curve_panel(cx, curve: FaithfulnessCurve) -> None:
    cx.plot(curve.fractions, curve.faithfulness, "o-", color="#333333")
    cx.axhline(1.0, color="#999999", lw=0.8, ls="--")
    cx.axhline(0.0, color="#999999", lw=0.8, ls=":")
    cx.set_xscale("log")
    cx.set_xlabel("edge fraction (top by |score|, pruned)", fontsize=AXIS_PT + 1)
    cx.set_ylabel("normalised faithfulness\n(0 = corrupted run, 1 = clean run)", fontsize=AXIS_PT + 1)
    cx.set_title(f"faithfulness curve (area from 1: {fixed(curve.area_from_one)})", fontsize=11)
    cx.tick_params(labelsize=AXIS_PT)
    for p, f, k in zip(curve.fractions, curve.faithfulness, curve.n_kept):
        cx.annotate(str(k), (p, f), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=AXIS_PT - 1)


def figure_size(graph: Graph, with_curve: bool) -> tuple[float, float]:
    """Inches: about one per head column and 0.55 per row (capped at 15 x 15 for the graph), plus the curve, plus the
    legend below (taller when the figure is narrow and the legend is one column)."""
    graph_w = min(max(6.0, 1.05 * graph.n_heads + 1.5), 15.0)
    graph_h = min(max(5.0, (2 * graph.n_layers + 2) * 0.55), 15.0)
    width = graph_w + (5.5 if with_curve else 0.0)
    return width, graph_h + (2.0 if width >= WIDE else 3.0)


def circuit_figure(graph: Graph, curve: FaithfulnessCurve | None, path: Path, title: str,
                   unit: str | None = None, task: Any = None) -> None:
    """Draw `graph`'s circuit (its in_graph edges and nodes_in_graph) and, when given, the faithfulness curve, to
    `path` (its extension names the format: minineo.cli.plots.SUFFIXES); `unit` is the scores' unit, said in the
    legend's width scale (None: the scores' unit is not known, and none is said); `task` the file's "task" record (method and score_unit; None: not recorded), from which
    the legend says what a score is and what each colour means."""
    plt = plots._pyplot()
    width, height = figure_size(graph, curve is not None)
    fig = plt.figure(figsize=(width, height), layout="constrained")
    grid = fig.add_gridspec(1, 2 if curve is not None else 1, width_ratios=[width - 5.5, 5.5] if curve else [1])
    top = _graph_panel(fig.add_subplot(grid[0, 0]), graph)
    _legend(fig, top, unit, score_key(task))
    if curve is not None:
        _curve_panel(fig.add_subplot(grid[0, 1]), curve)
    plots._title(fig, title)
    plots._save(fig, plt, path)
