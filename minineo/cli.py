"""The `minineo` command: run a prompt, inspect its cache, download models, and the analyses.

Printing lives here; the functions it calls return tensors and dataclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from minineo import hub
from minineo.loading import load

app = typer.Typer(help="minineo: look inside GPT-2 and GPT-Neo. The default model is the embedded tiny GPT-Neo.",
                  no_args_is_help=True, add_completion=False)
console = Console()

ModelOption = typer.Option(hub.EMBEDDED_NAME, "--model", "-m",
                           help="'tiny-neo' (embedded), a hub id such as gpt2 or EleutherAI/gpt-neo-125M, or a folder")
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda, ...")


def load_or_exit(name: str, device: str = "cpu"):
    """Load a model, turning a clear loading error into a one-line message and exit code 1."""
    try:
        return load(name, device=device)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(1) from None


def show(text: str) -> str:
    """A token's text with whitespace made visible, safe for rich markup."""
    return repr(text)[1:-1].replace("[", r"\[")


@app.command()
def run(prompt: str, model: str = ModelOption, top_k: int = typer.Option(10, help="how many next tokens to list"),
        generate: int = typer.Option(24, help="also print this many greedily generated tokens (0: none)"),
        device: str = DeviceOption) -> None:
    """The model's top-k next tokens for PROMPT, the tokens as the model saw them, and a greedy continuation."""
    m = load_or_exit(model, device)
    tokens = m.to_tokens(prompt)
    with torch.inference_mode():
        probs = m(tokens)[0, -1].float().softmax(-1)
    console.print(f"[bold]{model}[/bold] ({m.config.architecture}, {m.config.n_layers} layers) saw "
                  f"{tokens.shape[1]} tokens: " + " ".join(f"[cyan]{show(t)}[/cyan]|" for t in m.to_str_tokens(tokens[0])))
    table = Table(title=f"next token after {show(prompt[-40:])}")
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("id", justify="right")
    table.add_column("probability", justify="right")
    values, ids = probs.topk(min(top_k, probs.numel()))
    for rank, (p, i) in enumerate(zip(values.tolist(), ids.tolist()), 1):
        table.add_row(str(rank), show(m.to_string([i])), str(i), f"{p:.4f}")
    console.print(table)
    if generate > 0:
        n = min(generate, m.config.n_ctx - tokens.shape[1])
        continuation = m.generate(tokens, max_new_tokens=n)[0, tokens.shape[1]:]
        console.print(f"greedy continuation: [green]{show(m.to_string(continuation))}[/green]")


@app.command()
def cache(prompt: str, model: str = ModelOption, save: Optional[Path] = typer.Option(None, help="write the cache as .safetensors"),
          device: str = DeviceOption) -> None:
    """Every recorded activation name for PROMPT, with shape, dtype and norm."""
    m = load_or_exit(model, device)
    with torch.inference_mode():
        _, recorded = m.run_with_cache(m.to_tokens(prompt))
    table = Table(title=f"{len(recorded)} activations of {model} on {show(prompt[:40])}")
    for column in ("name", "shape", "dtype", "norm"):
        table.add_column(column, justify="right" if column == "norm" else "left")
    for name, value in recorded.items():
        table.add_row(name, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."), f"{value.float().norm():.4g}")
    console.print(table)
    if save is not None:
        recorded.save(save)
        console.print(f"saved {len(recorded)} tensors to {save}")


@app.command()
def download(name: str, cache_dir: Optional[Path] = typer.Option(None, help="default: $MININEO_CACHE or weights_cache/"),
             revision: Optional[str] = None) -> None:
    """Fetch a hub model (config, safetensors, tokenizer) into the cache, with a progress bar."""
    try:
        folder = hub.resolve(name, cache_dir, revision)
    except FileNotFoundError as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{name} is in {folder}")


def main() -> None:
    from minineo import cli_analysis  # noqa: F401  (registers the analysis sub-commands)
    from minineo import cli_patch  # noqa: F401  (registers `minineo patch`)

    app()


if __name__ == "__main__":
    main()
