"""`minineo circuits` on the embedded model: the tables, the heatmap, the errors."""

from __future__ import annotations


import torch
from typer.testing import CliRunner

import minineo
from minineo import analysis
from minineo.cli import app, plots

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)


def rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]


def test_circuits_lists_the_strongest_k_composition_pairs_and_the_copying_scores():
    result = invoke("circuits", "--top", "3")
    assert result.exit_code == 0, result.output
    assert "K-composition on tiny-neo's raw weights" in result.output
    table = rows(result.output)
    pairs, copying = table[:3], table[3:]
    k = analysis.composition_scores(minineo.load(), "k")
    best = torch.unravel_index(k.flatten().argmax(), k.shape)
    assert pairs[0][:2] == [f"L{best[0]}H{best[1]}", f"L{best[2]}H{best[3]}"]
    assert float(pairs[0][2]) == round(float(k.max()), 3)
    assert [float(r[2]) for r in pairs] == sorted((float(r[2]) for r in pairs), reverse=True)
    scores = analysis.copying_scores(minineo.load())
    assert len(copying) == 3 and float(copying[0][1]) == round(float(scores.max()), 3)
    assert "48 pairs whose receiver is not in a later layer are not scored" in " ".join(result.output.split())


def test_circuits_processed_q_composition_scores_the_processed_weights():
    result = invoke("circuits", "--kind", "Q", "--processed", "--top", "1")
    assert result.exit_code == 0, result.output
    q = analysis.composition_scores(minineo.load().processed(), "q")
    assert "Q-composition on tiny-neo's processed weights" in result.output
    assert float(rows(result.output)[0][2]) == round(float(q.max()), 3)


def test_circuits_plot_is_a_pair_heatmap_with_a_labelled_colour_bar(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, plt, path: figures.append(fig))
    result = invoke("circuits", "--kind", "v", "--plot", str(tmp_path / "c.png"))
    assert result.exit_code == 0, result.output
    (fig,) = figures
    heatmap, bar = fig.axes
    assert "V-composition score" in bar.get_ylabel()
    values = heatmap.get_images()[0].get_array()
    assert values.shape == (8, 8)  # (layer, head) x (layer, head) of tiny-neo's 2 x 4 heads
    assert values.mask[:4, :4].all() and values.mask[4:].all() and not values.mask[:4, 4:].any()
    assert [t.get_text() for t in heatmap.get_yticklabels()][3] == "L0H3"
    assert heatmap.get_xlabel().startswith("receiver") and heatmap.get_ylabel().startswith("sender")


def test_circuits_writes_a_png(tmp_path):
    plot = tmp_path / "circuits"
    result = invoke("circuits", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "circuits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_circuits_bad_kind_is_a_one_line_error():
    result = runner.invoke(app, ["circuits", "--kind", "x"])
    assert result.exit_code == 1
    assert "--kind 'x' is not one of q (queries), k (keys), v (values)" in " ".join(result.output.split())
