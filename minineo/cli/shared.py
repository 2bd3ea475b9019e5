"""The `minineo` app, its shared options and its one error boundary.

Every command registered on `app` runs inside the boundary. A `UserError` (a mistake the user can fix)
or an OSError (a path that cannot be read or written) prints one `error: ...` paragraph on stderr and
exits with code 1; any other exception is a bug and keeps its traceback. `--debug` (before the
sub-command) or MININEO_DEBUG=1 shows the traceback of user errors too.

The command modules (run.py, analysis.py, patch.py, harvest.py, tuned_lens.py) import this one and
register with `@app.command()`; the package's `__init__` imports them. This module imports none of them.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer
from rich.console import Console
from rich.text import Text

from minineo.checkpoints import hub
from minineo.checkpoints.loading import load
from minineo.cli.display import plural, show_token
from minineo.errors import UserError

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
                           help="'tiny-neo' (embedded, the default) or 'tiny-gpt2' (embedded), a hub id such as gpt2 or EleutherAI/gpt-neo-125M, or a folder")
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps")


def load_or_exit(name: str, device: str = "cpu"):
    """Load a model; a loading mistake (bad folder, file, device...) becomes a UserError for the boundary."""
    return load(name, device=device)


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
    from minineo.cli.plots import SUFFIXES

    return None if plot is None else output_path(plot, "plot", SUFFIXES, default_suffix=".png")
