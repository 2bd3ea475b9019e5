"""Plots for the CLI (matplotlib, headless): PNG, PDF, SVG or JPEG by the file's extension."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

from minineo import outputs

SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
MAX_WIDTH_IN = 14.0  # at 120 dpi: 1680 px, whatever the prompt's length
LABEL_IN = 0.2  # the room one rotated tick label of font size 8 needs along the axis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(fig, title: str) -> None:
    """A figure title wrapped to the figure's width, so a long model path is never clipped."""
    width = max(30, int(fig.get_figwidth() * 9.5))  # characters of a 12-pt title per inch, with a margin
    fig.suptitle(textwrap.fill(title, width, break_long_words=True, break_on_hyphens=False))


def _save(fig, plt, path: Path) -> None:
    """Write the figure whole or not at all (minineo.outputs.replacing), in the format of the path's extension."""
    try:
        with outputs.replacing(path, "plot") as tmp:
            fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)


def _position_ticks(ax, labels: list[str], width_in: float, axis: str = "x", keep: frozenset[int] = frozenset()) -> None:
    """Tick labels along an axis of `width_in` inches: every k-th one when they would overlap, each cut to 14 chars.

    The labels in `keep` (e.g. where two prompts differ) are shown first; no two shown labels are closer than
    the room one needs.
    """
    step = max(1, math.ceil(len(labels) * LABEL_IN / max(width_in - 2.0, 1.0)))
    accepted: list[int] = []
    for i in [*sorted(keep), *range(0, len(labels), step)]:
        if all(abs(i - j) >= step for j in accepted):
            accepted.append(i)
    shown = sorted(accepted)
    text = [labels[i] if len(labels[i]) <= 14 else labels[i][:13] + "…" for i in shown]
    if axis == "x":
        rotate = len(labels) > 8
        ax.set_xticks(list(shown), text, rotation=60 if rotate else 0, ha="right" if rotate else "center",
                      fontsize=8 if rotate else None)
    else:
        ax.set_yticks(list(shown), text, fontsize=8)


def head_heatmaps(scores: dict[str, torch.Tensor], path: Path, title: str, diverging: bool = False,
                  columns: int | None = None, colorbar: str | dict[str, str] = "",
                  unscored: str = "not scored") -> None:
    """One layer x head heatmap per score, `columns` per row (default: all in one row).

    `colorbar`: the colour bar's label (the quantity and its unit), one for all panels or one per score name.
    NaN cells (not scored) are drawn hatched in grey, outside the colour scale, and named in a legend under their
    panel with the `unscored` text (e.g. UNSCORED_LABEL, "not scored: no path"), never as a colour of the scale.
    """
    import numpy as np
    from matplotlib.patches import Patch, Rectangle

    plt = _pyplot()
    columns = min(columns or len(scores), len(scores))
    rows = math.ceil(len(scores) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(scores):]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes.flat, scores.items()):
        values = values.detach().float().cpu()
        hidden = values.isnan()
        scored = values[~hidden]
        limit = (float(scored.abs().max()) if scored.numel() else 0.0) or 1.0
        cmap = plt.get_cmap("RdBu" if diverging else "viridis").with_extremes(bad=UNSCORED_COLOUR)
        image = ax.imshow(np.ma.masked_array(values.numpy(), mask=hidden.numpy()), cmap=cmap,
                          vmin=-limit if diverging else None, vmax=limit if diverging else None, aspect="auto")
        for row, column in hidden.nonzero().tolist():
            ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.35", lw=0))
        if bool(hidden.any()):
            ax.legend(handles=[Patch(facecolor=UNSCORED_COLOUR, hatch="//", edgecolor="0.35", label=unscored)],
                      loc="upper left", bbox_to_anchor=(0, -0.14), frameon=False, fontsize="small")
        n_layers, n_heads = values.shape
        ax.set_xticks(range(n_heads))  # whole heads and layers: no fractional ticks
        ax.set_yticks(range(n_layers))
        ax.set(title=name, xlabel="head", ylabel="layer")
        fig.colorbar(image, ax=ax, label=colorbar.get(name, "") if isinstance(colorbar, dict) else colorbar)
    _title(fig, title)
    _save(fig, plt, path)


def composition_heatmap(scores: torch.Tensor, path: Path, title: str, label: str) -> None:
    """(layer, head, layer, head) scores as a sender (down) x receiver (across) heatmap of every head pair.

    NaN cells (a receiver not in a later layer than its sender) are left blank; the colour bar says what
    the colours measure.
    """
    plt = _pyplot()
    n_layers, n_heads = scores.shape[:2]
    n = n_layers * n_heads
    values = scores.detach().double().cpu().reshape(n, n)
    size = min(24.0, max(6.0, 0.22 * n + 3))
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.88")  # pairs that are not scored: light grey
    image = ax.imshow(values.numpy(), cmap=cmap, vmin=0, aspect="equal", interpolation="nearest")
    if n <= 48:  # every head labelled
        names = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
    else:  # one label per layer, at its first head
        starts = [layer * n_heads for layer in range(n_layers)]
        ax.set_xticks(starts, [f"L{layer}H0" for layer in range(n_layers)], rotation=90)
        ax.set_yticks(starts, [f"L{layer}H0" for layer in range(n_layers)])
    for boundary in range(1, n_layers):  # layer boundaries
        ax.axhline(boundary * n_heads - 0.5, color="white", linewidth=0.5)
        ax.axvline(boundary * n_heads - 0.5, color="white", linewidth=0.5)
    ax.set(xlabel="receiver head (reads)", ylabel="sender head (writes)")
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    _title(fig, title)
    _save(fig, plt, path)


def lens_heatmap(result, words: list[str], path: Path, title: str, tuned=None) -> None:
    """Layer x position: log10(1 + rank) of the actual next token under the logit lens; with `tuned` (the tuned
    lens's result on the same tokens) a second panel below it, on the same colour scale."""
    plt = _pyplot()
    panels = {"logit lens": result} | ({} if tuned is None else {"tuned lens": tuned})
    ranks = {name: torch.log10(1 + r.next_token_rank.float()).cpu() for name, r in panels.items()}
    top = max(float(r.max()) for r in ranks.values()) if all(r.numel() for r in ranks.values()) else None
    width = min(MAX_WIDTH_IN, max(6.0, 0.35 * len(words) + 3))
    height = 0.4 * len(result.labels) + 2.5
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height * len(panels)), squeeze=False,
                             layout="constrained")
    for ax, (name, r) in zip(axes[:, 0], panels.items()):
        image = ax.imshow(ranks[name].numpy(), cmap="magma_r", aspect="auto", vmin=0 if top is not None else None,
                          vmax=top or None)
        _position_ticks(ax, [repr(w)[1:-1].replace(" ", "␣") for w in words[:-1]], width)
        ax.set_yticks(range(len(r.labels)), r.labels)
        ax.set(xlabel="position (predicting the next token)", ylabel="residual stream",
               title=name if tuned is not None else "")
        fig.colorbar(image, ax=ax, label="log10(1 + rank of the next token)\n(0 = the lens's top token)")
    _title(fig, title)
    _save(fig, plt, path)


def embedding_norms(norms: torch.Tensor, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(norms.float().cpu().numpy(), bins=100)
    ax.set(xlabel="norm of the token's embedding row", ylabel="tokens")
    _title(fig, title)
    _save(fig, plt, path)


NORMALISED = {0.0: "0 corrupted", 1.0: "1 clean"}  # activation patching: the normalised metric itself
CHANGE = {0.0: "0 no effect", -1.0: "-1 corrupted"}  # path patching: its change from the clean run


UNSCORED_COLOUR = "#9e9e9e"  # a mid grey: RdBu's 0 is near-white (246, 246, 246), so the two never look alike
UNSCORED_LABEL = "not scored: no path"


def patching_heatmap(values: torch.Tensor, path: Path, title: str, columns: list[str], metric_name: str,
                     column_title: str = "position", anchors: dict[float, str] = NORMALISED,
                     rows: list[str] | None = None, row_title: str = "layer",
                     unscored: torch.Tensor | None = None) -> None:
    """Layer (down) x position or head (across) heatmap of patching results, colour scale centred at zero.

    `rows` labels the rows (default: the layer numbers), e.g. "L1H2" for a (layer, head) x position grid; like
    the columns, they are thinned where they would overlap, so each label must name its row whole.
    Columns labelled "clean/corrupted" (where the prompts differ) always keep their tick label.
    The scale always reaches the `anchors` (NORMALISED: 0 = the corrupted run, 1 = the clean one; CHANGE:
    0 = no effect, -1 = the corrupted run), which are ticks labelled with what they mean.
    `unscored` (bool, the shape of `values`) marks cells that were not measured (path patching: heads with no path
    to the receivers): drawn hatched in grey, outside the colour scale, and named in a legend ("not scored: no
    path"), never as the scale's 0.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    values = values.detach().double().cpu()
    n_layers, n_columns = values.shape
    width = min(MAX_WIDTH_IN, max(6.0, 0.3 * n_columns + 3))
    height = min(MAX_WIDTH_IN, max(3.5, (0.4 if rows is None else 0.2) * n_layers + 2.5))
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.patches import Patch, Rectangle

    hidden = torch.zeros(values.shape, dtype=torch.bool) if unscored is None else unscored.detach().cpu().bool()
    scored = values[~hidden]
    limit = max([float(scored.abs().max()) if scored.numel() else 0.0] + [abs(t) for t in anchors])
    cmap = colormaps["RdBu"].with_extremes(bad=UNSCORED_COLOUR)
    image = ax.imshow(np.ma.masked_array(values.numpy(), mask=hidden.numpy()), cmap=cmap, vmin=-limit, vmax=limit,
                      aspect="auto")
    for row, column in hidden.nonzero().tolist():
        ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.35", lw=0))
    if bool(hidden.any()):
        ax.legend(handles=[Patch(facecolor=UNSCORED_COLOUR, hatch="//", edgecolor="0.35", label=UNSCORED_LABEL)],
                  loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False, fontsize="small")
    _position_ticks(ax, columns, width, keep=frozenset(i for i, c in enumerate(columns) if "/" in c))
    if rows is None:
        ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)])
    else:
        _position_ticks(ax, rows, height, axis="y")
    ax.set(xlabel=column_title, ylabel=row_title)
    bar = fig.colorbar(image, ax=ax, label=metric_name)
    automatic = [round(float(t), 6) for t in MaxNLocator(5).tick_values(-limit, limit) if -limit <= t <= limit]
    ticks = sorted(set(anchors) | {t for t in automatic if min(abs(t - a) for a in anchors) > 0.15 * limit})  # none crowd them
    bar.set_ticks(ticks, labels=[anchors.get(t, f"{t:g}") for t in ticks])
    _title(fig, title)
    _save(fig, plt, path)
