"""Issue 17, part 5: the plots the README makes read at a glance: capped size, labels that do not overlap,
every colour bar labelled with its quantity and unit, the patching colour bar marking 0 and 1. Issue 27, part 7:
`discover --plot`'s circuit reads at 12 x 12 heads (labels and q/k/v cells legible, a legend for width and colour)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image
from typer.testing import CliRunner

from minineo.cli import app, circuit_plot, plots
from minineo.discovery import circuits, files
from minineo.discovery.graph import Graph

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"
LONG = "When Mary and John went to the store after a long and tiring day at their work, John gave a drink to"
ANSWERS = ["--answer", " Mary", "--wrong", " John"]



def colour_bar_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def draw(tmp_path, *args) -> Image.Image:
    out = tmp_path / "plot.png"
    result = runner.invoke(app, [*args, "--plot", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Image.open(out)


@pytest.mark.parametrize("args, unit", [
    (["attribute", PROMPT, *ANSWERS], "(logits)"), (["ablate", PROMPT, *ANSWERS], "(logits)"),
    (["ioi", "--n", "4", "--no-ablation"], ("(logits)", "(no unit, -1 to 1)")), (["heads", "--n-seqs", "2", "--seq-len", "10"], "probability"),
    (["lens", PROMPT], "rank"), (["patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), *ANSWERS], "clean"),
])
def test_every_colour_bar_says_its_quantity_and_unit(tmp_path, figures, args, unit):
    draw(tmp_path, *args)
    labels = colour_bar_labels(figures[-1])
    assert labels and all(label.strip() for label in labels), labels
    units = (unit,) if isinstance(unit, str) else unit  # ioi's copying-score panel is a ratio, not logits
    assert all(any(u in label for u in units) for label in labels), labels


@pytest.mark.parametrize("command", ["lens", "patch"])
def test_long_prompts_give_capped_images_with_thinned_labels(tmp_path, figures, command):
    args = ["lens", LONG] if command == "lens" else ["patch", LONG, LONG.replace("John gave", "Mary gave"), *ANSWERS]
    image = draw(tmp_path, *args)
    assert image.width <= plots.MAX_WIDTH_IN * 120 + 1  # ~100 positions: was ~6,000 px wide
    ax = figures[-1].axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert 0 < len(shown) < 100  # thinned, not one per position
    fig = figures[-1]
    fig.canvas.draw()  # no two tick labels overlap
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
    centres = sorted((b.x0 + b.x1) / 2 for b in boxes)
    assert min(b - a for a, b in zip(centres, centres[1:])) >= 8  # pixels between rotated labels
    if command == "patch":  # where the prompts differ is always labelled
        assert any("J/M" in label for label in shown), shown


def test_patch_colour_bar_marks_the_corrupted_and_the_clean_run(tmp_path, figures):
    draw(tmp_path, "patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), *ANSWERS)
    bar = next(ax for ax in figures[-1].axes if ax.get_label() == "<colorbar>")
    ticks = list(bar.get_yticks())
    assert 0.0 in ticks and 1.0 in ticks, ticks
    texts = [t.get_text() for t in bar.get_yticklabels()]
    assert any(t.startswith("1") and "clean" in t for t in texts) and any("corrupted" in t for t in texts), texts


def test_path_patch_colour_bar_marks_no_effect_and_the_corrupted_run(tmp_path, figures):
    """path-patch plots the change from the clean run (0 = no effect, -1 = the corrupted run): its ticks say
    so, not the activation-patching labels (its 0 used to read "0 corrupted" and its 1 "1 clean")."""
    draw(tmp_path, "path-patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), *ANSWERS)
    bar = next(ax for ax in figures[-1].axes if ax.get_label() == "<colorbar>")
    labels = {round(float(v), 6): t.get_text() for v, t in zip(bar.get_yticks(), bar.get_yticklabels())}
    assert "no effect" in labels.get(0.0, "") and "corrupted" in labels.get(-1.0, ""), labels
    assert not any("clean" in t for t in labels.values()), labels
    assert bar.get_ylim()[0] <= -1.0, bar.get_ylim()  # the scale reaches the corrupted run


# ---- the discover circuit plot: legible at 12 x 12 heads, q/k/v marked, a legend for width and colour ----------------

EAP = Path(__file__).parent / "data" / "eap_ig"
CIRCUIT_JS = Path(circuit_plot.__file__).parent.parent / "views" / "assets" / "circuit.js"
DPI = 120


def random_circuit(n_layers: int = 12, n_heads: int = 12, top: int = 200) -> Graph:
    """A GPT-2-small-shaped graph whose top-`top` edges (by |score|, pruned) join 3 heads a layer and 5 MLPs."""
    generator = torch.Generator().manual_seed(0)
    graph = Graph(n_layers, n_heads, 64 * n_heads, "random")
    heads = {f"a{layer}.h{int(head)}" for layer in range(n_layers)
             for head in torch.randperm(n_heads, generator=generator)[:3]}
    mlps = {f"m{int(layer)}" for layer in torch.randperm(n_layers, generator=generator)[:5]}
    chosen = {"input", "logits", *heads, *mlps}
    scores = torch.randn(graph.scores.shape, generator=generator) * 0.01
    for name, s, r in graph.edges():
        sender, receiver = name.split("->")
        if sender in chosen and receiver.split("<")[0] in chosen:
            scores[s, r] *= 100
    graph.scores = scores * graph.real_edges
    circuits.apply_topn(graph, top, absolute=True, prune=True)
    return graph


def circuit_of(kind: str) -> Graph:
    return random_circuit() if kind == "12x12" else files.load_graph(EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json")


def drawn_circuit(tmp_path, figures, graph: Graph):
    circuit_plot.circuit_figure(graph, None, tmp_path / "circuit.png", "a circuit")
    fig = figures[-1]
    fig.canvas.draw()
    return fig, fig.axes[0], Image.open(tmp_path / "circuit.png")


def heads_in(graph: Graph) -> list[str]:
    return [n for n, keep in zip(graph.sender_names, graph.nodes_in_graph.tolist()) if keep and n.startswith("a")]


@pytest.mark.parametrize("kind", ["12x12", "tiny-gpt2"])
def test_every_label_of_the_circuit_plot_is_at_least_9_points(tmp_path, figures, kind):
    graph = circuit_of(kind)
    assert graph.n_edges_in_graph >= (100 if kind == "12x12" else 10)  # a real circuit survives pruning
    fig, ax, image = drawn_circuit(tmp_path, figures, graph)
    texts = [t for t in ax.texts + ax.get_yticklabels() + fig.legends[0].get_texts() if t.get_text()]
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 9]
    assert not small, small  # at 120 dpi: 15 pixels or more (the q/k/v letters were 5.5 points, 9 pixels)
    assert image.width <= (15 + 0.5) * DPI and image.height <= (15 + 2.5) * DPI


@pytest.mark.parametrize("kind", ["12x12", "tiny-gpt2"])
def test_every_head_in_the_circuit_shows_its_q_k_v_cells_inside_its_box_apart(tmp_path, figures, kind):
    graph = circuit_of(kind)
    fig, ax, _ = drawn_circuit(tmp_path, figures, graph)
    renderer = fig.canvas.get_renderer()
    by_gid = {t.get_gid(): t for t in ax.texts}
    for head in heads_in(graph):
        name = by_gid[f"node {head}"]
        letters = [by_gid[f"port {head}<{port}>"] for port in "qkv"]
        assert [t.get_text() for t in letters] == ["q", "k", "v"]
        boxes = [t.get_window_extent(renderer) for t in [name, *letters]]
        assert all(b.height >= 10 for b in boxes[1:]), [b.height for b in boxes]  # pixels: a readable letter
        for i, a in enumerate(boxes):  # name and letters never overlap one another
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (head, a, b)
        assert boxes[1].x1 < boxes[2].x0 and boxes[2].x1 < boxes[3].x0  # q, k, v from left to right


@pytest.mark.parametrize("kind", ["12x12", "tiny-gpt2"])
def test_an_edge_into_a_head_ends_in_the_cell_of_its_q_k_or_v_input(tmp_path, figures, kind):
    graph = circuit_of(kind)
    _, ax, _ = drawn_circuit(tmp_path, figures, graph)
    (lines,) = [c for c in ax.collections if c.get_gid() == "edges"]
    edges = circuit_plot.circuit_edges(graph)
    assert len(lines.get_segments()) == len(edges) == graph.n_edges_in_graph
    cells = [p for p in ax.patches if abs(p.get_width() - circuit_plot.BOX_W / 3) < 1e-9]  # the q/k/v cells
    checked = 0
    for (name, _), segment in zip(edges, lines.get_segments()):
        receiver = name.split("->")[1]
        if not receiver.endswith(">"):
            continue
        (x, y) = segment[-1]
        hit = [c for c in cells if c.get_x() <= x <= c.get_x() + c.get_width() and abs(c.get_y() - y) < 1e-9]
        assert len(hit) == 1, name  # it ends on the bottom of exactly one cell
        head = int(re.match(r"a\d+\.h(\d+)", receiver).group(1))
        left = head - circuit_plot.BOX_W / 2 + "qkv".index(receiver[-2]) * circuit_plot.BOX_W / 3  # its port's cell
        assert abs(hit[0].get_x() - left) < 1e-9, name
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("kind", ["12x12", "tiny-gpt2"])
def test_the_legend_says_what_width_and_colour_mean_as_the_html_view_colours(tmp_path, figures, kind):
    graph = circuit_of(kind)
    fig, ax, _ = drawn_circuit(tmp_path, figures, graph)
    legend = fig.legends[0]
    labels = [t.get_text().replace("\n", " ") for t in legend.get_texts()]  # a long entry wraps onto two lines
    html_blue, html_red = re.search(r'SCORE\[e\] < 0 \? "(#\w+)" : "(#\w+)"', CIRCUIT_JS.read_text()).groups()
    handles = dict(zip(labels, legend.legend_handles))
    blue = next(label for label in labels if "lowers the metric" in label)
    red = next(label for label in labels if "raises the metric" in label)
    assert blue.startswith("blue: score < 0") and handles[blue].get_color() == html_blue
    assert red.startswith("red: score > 0") and handles[red].get_color() == html_red
    widths = [(label, handles[label].get_linewidth()) for label in labels if label.startswith("width: |score|")]
    assert len(widths) >= 2 and widths == sorted(widths, key=lambda w: -w[1])  # a larger |score|, a wider line
    top = max(abs(float(graph.scores[s, r])) for _, s, r in graph.edges() if graph.in_graph[s, r])
    assert f"{top:.3g}" in widths[0][0] and "largest" in widths[0][0]
    assert any("q / k / v" in label for label in labels)
    (lines,) = [c for c in ax.collections if c.get_gid() == "edges"]
    for (_, score), colour in zip(circuit_plot.circuit_edges(graph), lines.get_colors()):
        assert tuple(colour[:3]) == to_rgb(html_blue if score < 0 else html_red)
    assert list(lines.get_linewidths()) == sorted(lines.get_linewidths())  # drawn weakest first: width by |score|


def test_discover_plot_draws_the_tiny_gpt2_circuit_through_the_command(tmp_path, figures):
    result = runner.invoke(app, ["discover", "--model", "tiny-gpt2", "--from",
                                 str(EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"), "--task",
                                 str(EAP / "tiny-gpt2-ioi16.jsonl"), "--out", str(tmp_path / "copy.json"),
                                 "--plot", str(tmp_path / "circuit.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fig = figures[-1]
    assert len(fig.axes) == 2 and "faithfulness" in fig.axes[1].get_title()  # the graph and the curve
    assert any(t.get_gid() == "port a0.h1<k>" for t in fig.axes[0].texts)
