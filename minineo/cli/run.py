"""`minineo run`, `cache` and `download`: the model's next tokens, its activations, its files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape

from minineo import report
from minineo.checkpoints import hub
from minineo.cli.display import plural, quote, show, show_token, titled_table, token_texts
from minineo.cli.shared import (DeviceOption, ModelOption, app, check_options, console, fail, load_or_exit, output_path,
                                prompt_tokens, working)
from minineo.errors import UserError
from minineo.record import sites


DEFAULT_GENERATE = 24  # `run`'s continuation when --generate is not given


@app.command()
def run(prompt: str, model: str = ModelOption, top_k: int = typer.Option(10, help="how many next tokens to list"),
        generate: Optional[int] = typer.Option(None, show_default=False,
                                               help=f"also print this many greedily generated tokens (0: none; "
                                                    f"default {DEFAULT_GENERATE}, shortened to fit the context)"),
        device: str = DeviceOption) -> None:
    """The model's top-k next tokens for PROMPT, the tokens as the model saw them, and a greedy continuation.

    The prompt and the continuation share the model's context (n_ctx tokens): a --generate that does not fit is
    refused; the default continuation is shortened to fit, with a warning."""
    check_options(top_k=(top_k, ">= 1"), generate=(generate, ">= 0"))
    m = load_or_exit(model, device)
    if top_k > m.config.d_vocab:  # as the lens's top_k: more tokens than the vocabulary holds is a mistake
        fail(f"--top-k must be at most {model}'s vocabulary of {m.config.d_vocab} tokens, got {top_k}; give "
             f"--top-k {m.config.d_vocab} or less")
    tokens = prompt_tokens(m, prompt, model)
    generate = new_tokens(generate, tokens.shape[1], m.config.n_ctx, model)  # before any output: no half answer
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
    values, ids = probs.topk(top_k)
    for rank, (p, i) in enumerate(zip(values.tolist(), ids.tolist()), 1):
        table.add_row(str(rank), show_token(m, i), str(i), f"{p:.4f}")
    console.print(table)
    if generate > 0:
        with working(f"generating {plural(generate, 'token')}"):
            continuation = m.generate(tokens, max_new_tokens=generate)[0, tokens.shape[1]:]
        console.print(f"greedy continuation: [green]{escape(repr(m.to_string(continuation)))}[/green]")


def new_tokens(generate: int | None, prompt: int, n_ctx: int, model: str) -> int:
    """How many tokens `run` generates after a `prompt`-token prompt: `generate` when given (a UserError when the
    prompt and it do not fit n_ctx, as model.generate refuses), else the default shortened to the room left (a
    warning when shortened, and when no room is left at all)."""
    room = n_ctx - prompt
    if generate is not None:
        if generate > room:
            fail(f"--generate {generate} does not fit: the prompt is {plural(prompt, 'token')} (with BOS) and {model} "
                 f"reads at most n_ctx={n_ctx}, so " + (f"at most {plural(room, 'new token')} {'fits' if room == 1 else 'fit'}; give --generate "
                 f"{room} or less, or shorten the prompt" if room else "no new token fits; shorten the prompt, or "
                 "give --generate 0"))
        return generate
    if room < DEFAULT_GENERATE:
        report.warn(f"the prompt is {plural(prompt, 'token')} (with BOS) of {model}'s n_ctx={n_ctx}, so "
                    + (f"the continuation is shortened from {DEFAULT_GENERATE} to {plural(room, 'token')}" if room
                       else "no room is left for a continuation: none is printed")
                    + "; shorten the prompt for more")
    return min(DEFAULT_GENERATE, room)


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
        save = output_path(save, "--save file", (".safetensors",), default_suffix=".safetensors",
                           kind="cache")
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
        norm = f"{finite_norm(value):#.4g}" + (" (finite entries)" if not bool(value.isfinite().all()) else "")
        table.add_row(name, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."), norm)
    console.print(table)
    if save is not None:
        recorded.save(save)
        console.print(f"saved {len(recorded)} tensors to {escape(str(save))}")


@app.command()
def download(name: str, cache_dir: Optional[Path] = typer.Option(None, help="default: $MININEO_CACHE or weights_cache/"),
             revision: Optional[str] = None) -> None:
    """Fetch a hub model (config, safetensors, tokenizer) into the cache, with a progress bar."""
    try:
        folder = hub.resolve(name, cache_dir, revision)
    except hub.NotCachedOffline as err:  # in this command's words: no folder to look for, no "run download"
        models = f"models--{err.name.replace('/', '--')}"
        raise UserError(f"could not download {err.name!r}: the hub cannot be reached ({err.offline_reason}) and the "
                        f"hub cache {err.cache} does not hold it yet; run this command on a machine with network and "
                        f"copy its {models} folder into {err.cache}, or point MININEO_CACHE (or --cache-dir) at a hub "
                        "cache that holds it") from None
    console.print(f"{escape(name)} is in {escape(str(folder))}")
