"""`minineo tune-lens`: train a tuned lens on a corpus; and the side-by-side table for `minineo lens --tuned`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from minineo.analysis.lens import LogitLens
from minineo.analysis.tuned_lens import TunedLens, apply_tuned_lens, train_tuned_lens
from minineo.analysis.tuned_lens_files import check_output
from minineo.cli import DeviceOption, ModelOption, app, console, load_or_exit, titled_table, token_text, visible
from minineo.model import Model


@app.command("tune-lens")
def tune_lens(
    corpus: str = typer.Argument(..., help="a .txt / .jsonl / .json / .parquet file, a save_to_disk folder, or a glob"),
    out: Path = typer.Option(..., "--out", "-o", help="the lens folder to write (lens.safetensors + lens.json)"),
    model: str = ModelOption,
    steps: int = typer.Option(250, help="optimizer steps (the paper's default)"),
    batch_size: int = typer.Option(8, help="rows per step"),
    context: Optional[int] = typer.Option(None, help="tokens per row (default: min(n_ctx, 512))"),
    optimizer: str = typer.Option("sgd", help="'sgd' (Nesterov, the paper's) or 'adam' (AdamW)"),
    lr: Optional[float] = typer.Option(None, help="default: 1.0 * (1 - momentum) for sgd, 1e-3 for adam"),
    text_field: str = typer.Option("text", help="the text column of a .jsonl / .json / .parquet / dataset corpus"),
    device: str = DeviceOption,
) -> None:
    """Train a tuned lens (one affine translator per layer) for a model on a corpus, and save it."""
    check_output(out)  # before training, not after: a wrong --out must not waste the run
    m = load_or_exit(model, device)
    lens = train_tuned_lens(m, corpus, steps=steps, batch_size=batch_size, context=context, optimizer=optimizer,
                            lr=lr, text_field=text_field)
    lens.save(out)
    console.print(f"wrote the tuned lens for {model} to {out}; view it with: minineo lens PROMPT --tuned {out}")


def lens_comparison(model: Model, tokens: torch.Tensor, logit: LogitLens, lens: TunedLens) -> Table:
    """Both lenses side by side, one row per layer: the top token at the last position and the mean KL to
    the final distribution over the prompt's positions."""
    with torch.inference_mode():
        tuned = apply_tuned_lens(lens, tokens)
    table = titled_table("logit lens vs tuned lens: top token at the last position, mean KL to final")
    table.add_column("layer")
    for column in ("logit top", "logit KL", "tuned top", "tuned KL"):
        table.add_column(column, justify="right")
    def top(result: LogitLens, layer: int) -> str:
        return escape(f"'{visible(token_text(model, int(result.top_tokens[layer, -1])))}'")  # quoted: ' ' stays visible

    for i, label in enumerate(logit.labels):
        table.add_row(label, top(logit, i), f"{logit.kl_to_final[i].mean():.3f}", top(tuned, i),
                      f"{tuned.kl_to_final[i].mean():.3f}")
    return table
