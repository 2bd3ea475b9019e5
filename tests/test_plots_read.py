"""Issue 17, part 5: the plots the README makes read at a glance: capped size, labels that do not overlap,
every colour bar labelled with its quantity and unit, the patching colour bar marking 0 and 1."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from minineo.cli import app, plots

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"
LONG = "When Mary and John went to the store after a long and tiring day at their work, John gave a drink to"
ANSWERS = ["--answer", " Mary", "--wrong", " John"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the commands draw, kept open for inspection (and still written, to check the pixel size)."""
    kept = []

    def keep(fig, plt, path):
        kept.append(fig)
        fig.savefig(path, dpi=120)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    plt.close("all")


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
