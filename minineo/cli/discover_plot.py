"""`minineo discover --plot`: the circuit as a layered graph beside its faithfulness curve (matplotlib, headless).

Rows from the bottom: `input`, then per layer a row of heads and above it the layer's MLP, `logits` on top. Every
node of the model is a faint dot; the circuit's nodes are labelled boxes. An edge runs from its sender up to its
receiver, its width by |score|, its colour by sign (blue: removing it lowers the metric, the usual kind of an
important edge in the noising form; red: raises it); an edge into a head ends at the head's q, k or v port (left,
middle, right of the box's bottom edge, marked q k v), so query, key and value composition read apart at 12 x 12.
"""

from __future__ import annotations

from pathlib import Path

from minineo.cli.plots import _pyplot, _save, _title
from minineo.discovery.faithfulness import FaithfulnessCurve
from minineo.discovery.graph import Graph

PORT = {"q": -0.28, "k": 0.0, "v": 0.28}  # x offset of a head's q/k/v input, in node widths


def _positions(graph: Graph) -> tuple[dict[str, tuple[float, float]], float]:
    """(node name -> (x, y)), width of the widest row."""
    H, L = graph.n_heads, graph.n_layers
    width = float(max(H, 1))
    pos = {"input": ((width - 1) / 2, 0.0)}
    for layer in range(L):
        for head in range(H):
            pos[f"a{layer}.h{head}"] = (float(head), 1.0 + 2 * layer)
        pos[f"m{layer}"] = ((width - 1) / 2, 2.0 + 2 * layer)
    pos["logits"] = ((width - 1) / 2, 1.0 + 2 * L)
    return pos, width


def circuit_figure(graph: Graph, curve: FaithfulnessCurve | None, path: Path, title: str) -> None:
    """Draw `graph`'s circuit (its in_graph edges and nodes_in_graph) and, when given, the faithfulness curve."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    pos, width = _positions(graph)
    L = graph.n_layers
    graph_w = min(max(6.0, width * 0.95 + 1.5), 14.0)
    graph_h = min(max(5.0, (2 * L + 2) * 0.55), 14.0)
    columns = 2 if curve is not None else 1
    fig = plt.figure(figsize=(graph_w + (5.5 if curve is not None else 0), graph_h + 1.0))
    grid = fig.add_gridspec(1, columns, width_ratios=[graph_w, 5.5][:columns])
    ax = fig.add_subplot(grid[0, 0])
    in_nodes = {n for n, keep in zip(graph.sender_names, graph.nodes_in_graph.tolist()) if keep} | {"logits"}
    edges = [(name, s, r, float(graph.scores[s, r])) for name, s, r in graph.edges() if graph.in_graph[s, r]]
    top = max((abs(score) for *_, score in edges), default=1.0) or 1.0
    box_w = 0.34 if width > 6 else 0.4
    for name, s, r, score in sorted(edges, key=lambda e: abs(e[3])):  # the strongest drawn last, on top
        sender, receiver = name.split("->")
        port = receiver[-2] if receiver.endswith(">") else None
        node = receiver.split("<")[0]
        x0, y0 = pos[sender]
        x1, y1 = pos[node]
        x1 += (PORT[port] * box_w * 2) if port else 0.0
        strength = abs(score) / top
        ax.annotate("", xy=(x1, y1 - 0.22), xytext=(x0, y0 + 0.22),
                    arrowprops=dict(arrowstyle="-|>", lw=0.4 + 3.6 * strength, mutation_scale=6 + 6 * strength,
                                    color="#1f5fbf" if score < 0 else "#c0392b", alpha=0.3 + 0.7 * strength,
                                    shrinkA=0, shrinkB=0, connectionstyle="arc3,rad=0.0"))
    for name, (x, y) in pos.items():
        if name in in_nodes:
            is_head = name.startswith("a")
            ax.text(x, y, name if not is_head else name.replace(".", "\n", 1) if width > 6 else name,
                    ha="center", va="center", fontsize=7 if width > 6 else 9, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.25", fc="#fff3c4" if is_head else "#d8ecd8" if name[0] == "m"
                              else "#e6e6e6", ec="black", lw=0.8))
            if is_head and width <= 16:
                for letter, dx in PORT.items():
                    ax.text(x + dx * box_w * 2, y - 0.33, letter, ha="center", va="top", fontsize=5.5, color="#555",
                            zorder=6)
        else:
            ax.plot([x], [y], "o", color="#cccccc", ms=3, zorder=1)
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-0.7, 2 * L + 1.7)
    ax.set_yticks([0] + [1 + 2 * l for l in range(L)] + [2 * L + 1],
                  ["input"] + [f"layer {l}" for l in range(L)] + ["logits"], fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"circuit: {graph.n_edges_in_graph} edges, {int(graph.nodes_in_graph.sum())} nodes", fontsize=10)
    ax.legend(handles=[Line2D([], [], color="#1f5fbf", lw=2.5, label="score < 0 (needed: out lowers the metric)"),
                       Line2D([], [], color="#c0392b", lw=2.5, label="score > 0 (out raises the metric)")],
              loc="upper left", bbox_to_anchor=(0.0, -0.01), fontsize=7, frameon=False, ncol=2)
    if curve is not None:
        cx = fig.add_subplot(grid[0, 1])
        cx.plot(curve.fractions, curve.faithfulness, "o-", color="#333333")
        cx.axhline(1.0, color="#999999", lw=0.8, ls="--")
        cx.axhline(0.0, color="#999999", lw=0.8, ls=":")
        cx.set_xscale("log")
        cx.set_xlabel("edge fraction (top by |score|, pruned)")
        cx.set_ylabel("normalised faithfulness\n(0 = corrupted run, 1 = clean run)")
        cx.set_title(f"faithfulness curve (area from 1: {curve.area_from_one:.3f})", fontsize=10)
        for p, f, k in zip(curve.fractions, curve.faithfulness, curve.n_kept):
            cx.annotate(str(k), (p, f), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    _title(fig, title)
    fig.tight_layout()
    _save(fig, plt, path)
