"""`path-patch --plot`: heads with no path to the receivers are not scored, and the figure says so: masked (drawn
in a grey outside the colour scale, hatched) and named in a legend, never the scale's near-white 0 "no effect"."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgba
from typer.testing import CliRunner

from minineo.cli import app, plots

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = PROMPT.replace("John gave", "Mary gave")


def test_unscored_heads_are_masked_hatched_and_labelled(tmp_path, monkeypatch):
    figures = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, plt, path: (figures.append(fig), real(fig, plt, path)))
    out = tmp_path / "paths.png"
    result = CliRunner().invoke(app, ["path-patch", PROMPT, CORRUPTED, "--answer", " Mary", "--wrong", " John",
                                      "--receivers", "1.3:k,1.3:v", "--plot", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "have no path" in result.stdout  # stdout says layer 1 is not ranked
    ax = figures[0].axes[0]
    data = ax.images[0].get_array()
    assert np.ma.getmaskarray(data)[1].all() and not np.ma.getmaskarray(data)[0].any()  # layer 1: not scored
    cmap = ax.images[0].get_cmap()
    bad, zero = np.array(cmap.get_bad()), np.array(cmap(0.5))
    assert np.abs(bad[:3] - zero[:3]).max() > 0.2 and tuple(bad) == to_rgba(plots.UNSCORED_COLOUR)
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(hatched) == int(np.ma.getmaskarray(data).sum())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["not scored: no path"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
