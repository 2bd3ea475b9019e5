"""Plots for the CLI (matplotlib, headless): PNG, PDF, SVG or JPEG by the file's extension."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def head_heatmaps(scores: dict[str, torch.Tensor], path: Path, title: str, diverging: bool = False,
                  columns: int | None = None) -> None:
    """One layer x head heatmap per score, `columns` per row (default: all in one row)."""
    plt = _pyplot()
    columns = min(columns or len(scores), len(scores))
    rows = math.ceil(len(scores) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(scores):]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes.flat, scores.items()):
        values = values.detach().float().cpu()
        limit = float(values.abs().max()) or 1.0
        image = ax.imshow(values, cmap="RdBu" if diverging else "viridis", vmin=-limit if diverging else None,
                          vmax=limit if diverging else None, aspect="auto")
        n_layers, n_heads = values.shape
        ax.set_xticks(range(n_heads))  # whole heads and layers: no fractional ticks
        ax.set_yticks(range(n_layers))
        ax.set(title=name, xlabel="head", ylabel="layer")
        fig.colorbar(image, ax=ax)
    _title(fig, title)
    _save(fig, plt, path)


def lens_heatmap(result, words: list[str], path: Path, title: str) -> None:
    """Layer x position: log10(1 + rank) of the actual next token under the logit lens."""
    plt = _pyplot()
    ranks = torch.log10(1 + result.next_token_rank.float()).cpu()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(words)), 0.4 * len(result.labels) + 2.5), layout="constrained")
    image = ax.imshow(ranks, cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(words) - 1), [repr(w)[1:-1].replace(" ", "␣") for w in words[:-1]], rotation=60, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set(xlabel="position (predicting the next token)", ylabel="residual stream")
    fig.colorbar(image, ax=ax, label="log10(1 + rank)")
    _title(fig, title)
    _save(fig, plt, path)


def embedding_norms(norms: torch.Tensor, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(norms.float().cpu().numpy(), bins=100)
    ax.set(xlabel="norm", ylabel="tokens")
    _title(fig, title)
    _save(fig, plt, path)


def patching_heatmap(values: torch.Tensor, path: Path, title: str, columns: list[str], metric_name: str,
                     column_title: str = "position") -> None:
    """Layer (down) x position or head (across) heatmap of patching results, colour scale centred at zero."""
    plt = _pyplot()
    values = values.detach().double().cpu()
    n_layers, n_columns = values.shape
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 0.3 * n_columns + 3)), max(3.5, 0.4 * n_layers + 2.5)),
                           layout="constrained")
    limit = float(values.abs().max()) or 1.0
    image = ax.imshow(values.numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(n_columns), columns, rotation=60 if n_columns > 8 else 0, ha="right" if n_columns > 8 else "center")
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)])
    ax.set(xlabel=column_title, ylabel="layer")
    fig.colorbar(image, ax=ax, label=metric_name)
    _title(fig, title)
    _save(fig, plt, path)
