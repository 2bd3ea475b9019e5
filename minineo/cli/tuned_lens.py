"""`minineo tune-lens`: train a tuned lens on a corpus and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minineo.analysis.tuned_lens import train_tuned_lens
from minineo.cli.shared import (DeviceOption, ModelOption, app, check_options, console, load_or_exit,
                                output_folder)


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
    check_options(steps=(steps, ">= 1"), batch_size=(batch_size, ">= 1"), context=(context, ">= 2"), lr=(lr, "> 0"))
    # a missing parent folder is refused, not created; an existing --out that is not a tuned-lens folder is refused
    # before training, not after (a wrong --out must not waste the run); held until the lens is written and reported
    out = output_folder(out, "--out", kind="tuned-lens")
    m = load_or_exit(model, device)
    lens = train_tuned_lens(m, corpus, steps=steps, batch_size=batch_size, context=context, optimizer=optimizer,
                            lr=lr, text_field=text_field)
    lens.save(out)
    console.print(f"wrote the tuned lens for {model} to {out}; view it with: minineo lens PROMPT --tuned {out}")
