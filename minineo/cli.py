"""The `minineo` command: one app, its error boundary, and the basic sub-commands (run, cache, download).

Other sub-commands live in their own modules (`cli_analysis.py`, ...): each imports `app` and the
helpers from here and registers with `@app.command()`; `main()` imports them. Nothing here imports
them at import time, so the arrows point one way.

The error boundary: every command registered on `app` runs inside it. A `UserError` (a mistake the
user can fix) or an OSError (a path that cannot be read or written) prints one `error: ...`
paragraph on stderr and exits with code 1; any other exception is a bug and keeps its traceback.
`--debug` (before the sub-command) or MININEO_DEBUG=1 shows the traceback of user errors too.
Printing lives here; the functions it calls return tensors and dataclasses.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from minineo import hub, sites
from minineo.errors import UserError
from minineo.loading import load

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


def debugging() -> bool:
    """True under `--debug` or MININEO_DEBUG=1: user errors keep their traceback."""
    return _state["debug"] or os.environ.get("MININEO_DEBUG", "").lower() in ("1", "true", "yes", "on")


def fail(message: str) -> None:
    """Raise the UserError the boundary prints as `error: message`."""
    raise UserError(message)


def _boundary(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a sub-command; a user's mistake becomes one `error:` paragraph and exit code 1."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (UserError, OSError) as err:
            if debugging():
                raise
            text = str(err) if isinstance(err, UserError) else f"{err}. Check the path and its permissions."
            err_console.print(Text("error: ", style="bold red") + Text(text), soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if debugging():
                raise
            err_console.print(Text("interrupted", style="bold red"))
            raise typer.Exit(130) from None

    return run_command


class App(typer.Typer):
    """A Typer app whose every command runs inside the error boundary."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(_boundary(function))
            return function

        return decorator


app = App(help="minineo: look inside GPT-2 and GPT-Neo. The default model is the embedded tiny GPT-Neo.",
          no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the full traceback of every error "
                                        "(also MININEO_DEBUG=1)")) -> None:
    _state["debug"] = debug


ModelOption = typer.Option(hub.EMBEDDED_NAME, "--model", "-m",
                           help="'tiny-neo' (embedded), a hub id such as gpt2 or EleutherAI/gpt-neo-125M, or a folder")
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps")


def load_or_exit(name: str, device: str = "cpu"):
    """Load a model; a loading mistake (bad folder, file, device...) becomes a UserError for the boundary."""
    return load(name, device=device)


def token_text(m, token_id: int) -> str:
    """One token's text as `m.to_string([token_id])` decodes it, except where that gives '�' for bytes that are
    not valid UTF-8 on their own: then the token's bytes, each undecodable one as a lone surrogate (Python's
    surrogateescape) that `visible` and `show` write as \\xNN, so distinct byte tokens look distinct."""
    text = m.to_string([int(token_id)])
    raw = m.tokenizer.token_bytes(token_id) if "\ufffd" in text else None
    return text if raw is None else raw.decode("utf-8", "surrogateescape")


def token_texts(m, tokens) -> list[str]:
    """`token_text` of each token of a (pos,) sequence."""
    return [token_text(m, t) for t in torch.as_tensor(tokens).flatten().tolist()]


def visible(text: str) -> str:
    """repr's escapes without the quotes (a newline is \\n), and an undecodable byte from `token_text` as \\xNN."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else repr(c)[1:-1] for c in text)


def show(text: str) -> str:
    """A token's text with whitespace and undecodable bytes made visible (a space is ␣, a newline \\n, a byte that
    is not UTF-8 on its own \\xNN), safe for rich markup."""
    return escape(visible(text).replace(" ", "␣"))


def show_token(m, token_id: int) -> str:
    """`show` of one token id's `token_text`."""
    return show(token_text(m, token_id))


def quote(text: str, limit: int = 40) -> str:
    """A prompt for a title: its first `limit` characters, quoted, safe for rich markup."""
    return escape(repr(text if len(text) <= limit else text[:limit] + "…"))


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 token', '2 tokens' (`many` for irregular plurals: plural(n, "process", "processes"))."""
    return f"{n} {word if n == 1 else many or word + 's'}"


class _TitledTable(Table):
    """A Table whose title (rich markup), when wider than the table, is its own line above it: rich wraps a
    title to the table's width, which breaks a narrow table's title into a column of fragments."""

    def __init__(self, title: str):
        super().__init__()
        self.heading = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        heading = Text.from_markup(self.heading, style="table.title")
        self.title = None
        if heading.cell_len <= min(Measurement.get(console, options, self).maximum, options.max_width):
            self.title = heading
        else:
            yield heading
        yield from super().__rich_console__(console, options)


def titled_table(title: str) -> Table:
    """A rich Table titled `title` (rich markup) whose title is never wrapped into fragments (see _TitledTable)."""
    return _TitledTable(title)


def check_positive(**values: int) -> None:
    """Each option must be >= 1: `check_positive(top_k=top_k)` names --top-k in the error."""
    for name, value in values.items():
        if value < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def prompt_tokens(m, prompt: str, model: str) -> torch.Tensor:
    """The prompt's tokens (1, pos), or a UserError when it does not fit the model's context.

    An empty prompt is BOS alone: the model's view of a text's first token, said in a note.
    """
    tokens = m.to_tokens(prompt)
    if not prompt:
        bos = show_token(m, int(tokens[0, 0]))
        console.print(f"[yellow]note:[/yellow] the prompt is empty: the model starts from its BOS token {bos} alone "
                      "(what it expects at the start of a text)")
    if tokens.shape[1] > m.config.n_ctx:
        fail(f"the prompt is {plural(tokens.shape[1], 'token')} (with BOS) but {model} reads at most n_ctx={m.config.n_ctx}; "
             "shorten it")
    return tokens


def output_path(path: Path, what: str, suffixes: tuple[str, ...] = (), default_suffix: str = "") -> Path:
    """The file to write: its folder must exist and be writable, and it must not be a folder.

    With `suffixes`, its extension must be one of them; a name without one gets `default_suffix`.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        fail(f"{what} {path} is a directory; give a file name, e.g. {path / ('out' + (default_suffix or ''))}")
    if suffixes:
        if not path.suffix and default_suffix:
            path = path.with_name(path.name + default_suffix)
        if path.suffix.lower() not in suffixes:
            fail(f"{what} {path} has the extension {path.suffix!r}, which cannot be written; use one of "
                 f"{', '.join(suffixes)}")
    folder = path.parent
    if not folder.is_dir():
        what_it_is = "is a file" if folder.exists() else "does not exist"
        fail(f"cannot write {what} {path}: the folder {folder} {what_it_is}; create the folder first or give another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        fail(f"cannot write {what} {path}: the folder {folder} is not writable ({err.strerror or err}); "
             "give a path in a folder you can write to")
    return path


def plot_path(plot: Optional[Path]) -> Optional[Path]:
    """The checked plot file (before any work is done), or None."""
    from minineo.plots import SUFFIXES

    return None if plot is None else output_path(plot, "plot", SUFFIXES, default_suffix=".png")


@app.command()
def run(prompt: str, model: str = ModelOption, top_k: int = typer.Option(10, help="how many next tokens to list"),
        generate: int = typer.Option(24, help="also print this many greedily generated tokens (0: none)"),
        device: str = DeviceOption) -> None:
    """The model's top-k next tokens for PROMPT, the tokens as the model saw them, and a greedy continuation."""
    check_positive(top_k=top_k)
    if generate < 0:
        fail(f"--generate must be 0 or more, got {generate}")
    m = load_or_exit(model, device)
    tokens = prompt_tokens(m, prompt, model)
    with torch.inference_mode():
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
        save = output_path(save, "--save file")
    m = load_or_exit(model, device)
    with torch.inference_mode():
        _, recorded = m.run_with_cache(prompt_tokens(m, prompt, model))
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


def main() -> None:
    from minineo import cli_analysis  # noqa: F401  (registers the analysis sub-commands)
    from minineo import cli_harvest  # noqa: F401  (registers `minineo harvest`)
    from minineo import cli_tuned_lens  # noqa: F401  (registers tune-lens)
    from minineo import cli_patch  # noqa: F401  (registers `minineo patch`)

    app()


if __name__ == "__main__":
    main()
