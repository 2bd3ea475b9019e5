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
