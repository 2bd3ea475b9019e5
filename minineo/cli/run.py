"""`minineo run`, `cache` and `download`: the model's next tokens, its activations, its files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape

from minineo.checkpoints import hub
from minineo.cli.display import plural, quote, show, show_token, titled_table, token_texts
from minineo.cli.shared import (DeviceOption, ModelOption, app, check_options, console, fail, load_or_exit, output_path,
                                prompt_tokens, working)
from minineo.record import sites


@app.command()
def run(prompt: str, model: str = ModelOption, top_k: int = typer.Option(10, help="how many next tokens to list"),
        generate: int = typer.Option(24, help="also print this many greedily generated tokens (0: none)"),
        device: str = DeviceOption) -> None:
    """The model's top-k next tokens for PROMPT, the tokens as the model saw them, and a greedy continuation."""
    check_options(top_k=(top_k, ">= 1"), generate=(generate, ">= 0"))
    m = load_or_exit(model, device)
    tokens = prompt_tokens(m, prompt, model)
    with torch.inference_mode(), working(f"running {model} on {plural(tokens.shape[1], 'token')}"):
        probs = m(tokens)[0, -1].float().softmax(-1)
    if not bool(probs.isfinite().all()):
        fail(f"{model} computed NaN or inf probabilities for this prompt; its weights or activations overflow "
             "(try --device cpu in float32, or check the model's weights)")
    console.print(f"[bold]{escape(model)}[/bold] ({m.config.architecture}, {plural(m.config.n_layers, 'layer')}) "
                  f"saw {plural(tokens.shape[1], 'token')}: " + " ".join(f"[cyan]{show(t)}[/cyan]|" for t in token_texts(m, tokens[0])))
    table = titled_table(f"next token after {quote(prompt[-40:])} (␣ is a space)")
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("id", justify="right")
    table.add_column("probability", justify="right")
    values, ids = probs.topk(min(top_k, probs.numel()))
    for rank, (p, i) in enumerate(zip(values.tolist(), ids.tolist()), 1):
        table.add_row(str(rank), show_token(m, i), str(i), f"{p:.4f}")
    console.print(table)
    if generate > 0:
        n = min(generate, m.config.n_ctx - tokens.shape[1])
        with working(f"generating {plural(n, 'token')}"):
            continuation = m.generate(tokens, max_new_tokens=n)[0, tokens.shape[1]:]
        console.print(f"greedy continuation: [green]{escape(repr(m.to_string(continuation)))}[/green]")


def finite_norm(value: torch.Tensor) -> float:
    """The norm over the finite entries (attn.scores holds -inf where attention is masked)."""
    value = value.float()
    return float(value[value.isfinite()].norm())


@app.command()
def cache(prompt: str, model: str = ModelOption, save: Optional[Path] = typer.Option(None, help="write the cache as .safetensors"),
          device: str = DeviceOption) -> None:
    """Every recorded activation name for PROMPT in forward order, with shape, dtype and norm."""
    if save is not None:
        # only a .safetensors file (a name without an extension gets it): `--save corpus.txt` replaced the text
        save = output_path(save, "--save file", (".safetensors",), default_suffix=".safetensors")
    m = load_or_exit(model, device)
    tokens = prompt_tokens(m, prompt, model)
    with torch.inference_mode(), working(f"recording every activation of {model} on {plural(tokens.shape[1], 'token')}"):
        _, recorded = m.run_with_cache(tokens)
    order = {name: i for i, name in enumerate(sites.all_names(m.config, include_on_request=True))}
    names = sorted(recorded, key=lambda name: order.get(name, len(order)))
    table = titled_table(f"{len(recorded)} activations of {escape(model)} on {quote(prompt)}, in forward order")
    for column in ("name", "shape", "dtype", "norm"):
        table.add_column(column, justify="right" if column == "norm" else "left")
    for name in names:
        value = recorded[name]
        norm = f"{finite_norm(value):.4g}" + (" (finite entries)" if not bool(value.isfinite().all()) else "")
        table.add_row(name, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."), norm)
    console.print(table)
    if save is not None:
        recorded.save(save)
        console.print(f"saved {len(recorded)} tensors to {escape(str(save))}")


@app.command()
def download(name: str, cache_dir: Optional[Path] = typer.Option(None, help="default: $MININEO_CACHE or weights_cache/"),
             revision: Optional[str] = None) -> None:
    """Fetch a hub model (config, safetensors, tokenizer) into the cache, with a progress bar."""
    folder = hub.resolve(name, cache_dir, revision)
    console.print(f"{escape(name)} is in {escape(str(folder))}")
