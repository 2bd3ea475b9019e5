"""PNG plots for the CLI (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def head_heatmaps(scores: dict[str, torch.Tensor], path: Path, title: str, diverging: bool = False) -> None:
    """One layer x head heatmap per score."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], scores.items()):
        values = values.detach().float().cpu()
        limit = float(values.abs().max()) or 1.0
        image = ax.imshow(values, cmap="RdBu" if diverging else "viridis", vmin=-limit if diverging else None,
                          vmax=limit if diverging else None, aspect="auto")
        ax.set(title=name, xlabel="head", ylabel="layer")
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lens_heatmap(result, words: list[str], path: Path, title: str) -> None:
    """Layer x position: log10(1 + rank) of the actual next token under the logit lens."""
    plt = _pyplot()
    ranks = torch.log10(1 + result.next_token_rank.float()).cpu()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(words)), 0.4 * len(result.labels) + 2))
    image = ax.imshow(ranks, cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(words) - 1), [repr(w)[1:-1] for w in words[:-1]], rotation=60, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set(title=title, xlabel="position (predicting the next token)", ylabel="residual stream")
    fig.colorbar(image, ax=ax, label="log10(1 + rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def embedding_norms(norms: torch.Tensor, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(norms.float().cpu().numpy(), bins=100)
    ax.set(title=title, xlabel="norm", ylabel="tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def patching_heatmap(values: torch.Tensor, path: Path, title: str, columns: list[str], metric_name: str,
                     column_title: str = "position") -> None:
    """Layer (down) x position or head (across) heatmap of patching results, colour scale centred at zero."""
    plt = _pyplot()
    values = values.detach().double().cpu()
    n_layers, n_columns = values.shape
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 0.3 * n_columns + 3)), max(3.5, 0.4 * n_layers + 2.5)))
    limit = float(values.abs().max()) or 1.0
    image = ax.imshow(values.numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(n_columns), columns, rotation=60 if n_columns > 8 else 0, ha="right" if n_columns > 8 else "center")
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)])
    ax.set(title=title, xlabel=column_title, ylabel="layer")
    fig.colorbar(image, ax=ax, label=metric_name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
