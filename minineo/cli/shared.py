"""The `minineo` app, its shared options and its one error boundary (its core, shared with the `python -m`
scripts, is minineo.boundary).

Every command registered on `app` runs inside the boundary. A `UserError` (a mistake the user can fix)
or an OSError (a path that cannot be read or written) prints one `error: ...` paragraph on stderr and
exits with code 1; any other exception is a bug and keeps its traceback. A command line typer cannot parse
(`--top 1.5` for an integer, an unknown option, a missing argument) is one `error:` line too, exit code 2 (`_Group`). `--debug` (before the
sub-command) or MININEO_DEBUG=1 shows the traceback of user errors too.

Options are checked at the door: `check_options` checks every numeric option (its range in the message), the
boundary checks every `device` option, `output_path` / `plot_path` check files to write, all before any work.

The command modules (run.py, analysis.py, patch.py, harvest.py, tuned_lens.py) import this one and
register with `@app.command()`; the package's `__init__` imports them. This module imports none of them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import click
import typer
from rich.console import Console
from rich.text import Text

from typer.core import Abort, TyperGroup
from typer.core import _click  # the click that typer runs on (typer 0.2x vendors its own copy)

from minineo import checks, outputs, progress, report
from minineo.boundary import debugging_by_environment, err_console, print_error
from minineo.checkpoints import hub
from minineo.checkpoints.loading import load
from minineo.cli.display import clip, plural, show, show_token, signed
from minineo.errors import UserError

console = Console()
_state: dict[str, Any] = {"debug": False, "outputs": None, "claimed": {}}


def debugging() -> bool:
    """True under `--debug` or MININEO_DEBUG=1: user errors keep their traceback."""
    return _state["debug"] or debugging_by_environment()


def fail(message: str) -> None:
    """Raise the UserError the boundary prints as `error: message`."""
    raise UserError(message)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Under --debug, another library's Python warning as one paragraph on stderr, with where it came from."""
    err_console.print(Text(f"warning ({category.__name__}, {filename}:{lineno}): ", style="yellow")
                      + Text(str(message)), soft_wrap=True)


def _boundary(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a sub-command; a user's mistake becomes one `error:` paragraph and exit code 1.

    Before the command runs, a `device` option is checked (the one device check every command shares);
    minineo's warnings print as `warning:` lines on stderr (minineo.report); other libraries' log lines,
    progress bars and Python warnings are kept out (shown under --debug). The outputs the command claimed
    (`output_path`) stay claimed until it has returned, so its success message is about a file no other
    command replaced.
    """

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(), contextlib.ExitStack() as claims:
                report.quiet_third_parties()
                if debugging():
                    warnings.showwarning = _show_warning
                else:  # minineo's own warnings go through minineo.report; the rest is other libraries' chatter
                    warnings.simplefilter("ignore")
                _state["outputs"], _state["claimed"] = claims, {}
                try:
                    if isinstance(kwargs.get("device"), str):
                        check_device_option(kwargs["device"])
                    _check_repeated_options(command, kwargs)
                    return command(*args, **kwargs)
                finally:
                    _state["outputs"], _state["claimed"] = None, {}
        except (UserError, OSError) as err:
            if debugging():
                raise
            print_error(err)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if debugging():
                raise
            err_console.print(Text("interrupted", style="bold red"))
            raise typer.Exit(130) from None

    return run_command


def _check_repeated_options(command: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """An option given several times (a list-typed option, `discover-compare -m a -m a`) names each item once: the
    one check of every such option (comma-separated ones go through list_items)."""
    parameters = inspect.signature(command).parameters
    for name, values in kwargs.items():
        if isinstance(values, (list, tuple)) and name in parameters:
            declared = getattr(parameters[name].default, "param_decls", None) or ()
            option = max((d for d in declared if d.startswith("--")), key=len, default="--" + name.replace("_", "-"))
            checks.distinct(values, option)


def help_paragraphs(doc: str | None) -> str:
    """A docstring as help text: paragraphs (split at blank lines) each on one line, so that the help
    wraps at the terminal's width, not where the source line ended ("... every layer and\n position")."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs if paragraph.strip())


def _flags_show_no_type() -> None:
    """Help shows a flag as a flag (`--debug`, `--kl`), not with a value placeholder (`--debug <bool>`): typer 0.29
    renders every option's type in the help's type column, flags included, although a flag takes no value."""
    from typer.core import TyperOption  # noqa: F811

    rendered = TyperOption.display_type_rich
    if getattr(rendered, "minineo_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else rendered(self, ctx)

    display_type_rich.minineo_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()


def _given_value(err: Exception, args: list[str]) -> str | None:
    """The text the user gave for the option a BadParameter is about (`--top 1.5` or `--top=1.5`), or None."""
    param = getattr(err, "param", None)
    if not isinstance(err, _click.exceptions.BadParameter) or param is None or not getattr(param, "opts", None):
        return None
    for i, arg in enumerate(args):
        for opt in param.opts:
            if arg == opt and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1:]
    return None


class _Group(TyperGroup):
    """The app's click group: a usage error (an option typer cannot parse, `--top 1.5` for an integer, an unknown
    option, a missing argument) is one `error:` line naming the option, the value and where to look (`minineo
    COMMAND --help`), exit status 2 as click's; typer would draw a multi-line usage box."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as err:  # a bare `minineo` (or group): the help, as typer shows it
            from typer import rich_utils

            rich_utils.rich_format_error(err)
            sys.exit(err.exit_code)
        except _click.exceptions.UsageError as err:
            if debugging():
                raise
            where = err.ctx.command_path if err.ctx is not None else "minineo"
            message = err.format_message().strip().rstrip(".")
            value = _given_value(err, sys.argv[1:] if args is None else list(args))
            if value is not None:  # `Invalid value for '--top' (got '1.5'): Input should be a valid integer`
                message = message.replace(":", f" (got {value!r}):", 1)
            print_error(UserError(f"{message} (see `{where} --help`)"))
            sys.exit(err.exit_code)
        except _click.exceptions.ClickException as err:  # another of click's errors (a file option it could not open)
            print_error(UserError(err.format_message()))
            sys.exit(err.exit_code)
        except Abort:  # end of input at a prompt (typer's KeyboardInterrupt is Exit(130), returned as the code)
            err_console.print(Text("aborted", style="bold red"))
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class App(typer.Typer):
    """A Typer app whose every command runs inside the error boundary."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            help_text = kwargs.get("help") or help_paragraphs(function.__doc__)
            super(App, self).command(*args, **{**kwargs, "help": help_text})(_boundary(function))
            return function

        return decorator


app = App(help="minineo: look inside GPT-2 and GPT-Neo. The default model is the embedded tiny GPT-Neo.",
          cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the full traceback of every error "
                                        "(also MININEO_DEBUG=1)")) -> None:
    _state["debug"] = debug


ModelOption = typer.Option(hub.EMBEDDED_NAME, "--model", "-m",
                           help="'tiny-neo' (embedded, the default) or 'tiny-gpt2' (embedded), a hub id such as gpt2 or EleutherAI/gpt-neo-125M, or a folder")
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps")


def check_device_option(device: str) -> None:
    """The one device check of every command (the boundary runs it on any `device` option): 'auto', or a device
    this torch can use (minineo.checks.device), as `--device` in the message."""
    if device != "auto":
        checks.device(device, "--device")


def working(description: str):
    """A spinner on stderr saying what runs, shown only if it lasts over ~2 s and stderr is a terminal."""
    return progress.task(description, delay=2.0)


def load_or_exit(name: str, device: str = "cpu", **kwargs: Any):
    """Load a model (with a status line when it is slow); a loading mistake becomes a UserError for the boundary."""
    with working(f"loading {name} onto {device}"):
        return load(name, device=device, **kwargs)


def check_options(**options: tuple) -> None:
    """Every numeric option of every command is checked here, before any work, with its allowed range in the message.

        check_options(top=(top, ">= 1"), lr=(lr, "> 0"), sample=(sample, "0 or >= 2"), frac=(frac, "0..1"))

    Each keyword is the option's name (`top_k` is shown as --top-k), each value (the option's value, its rule)
    or (value, rule, why), the why said in parentheses: `sample=(sample, "0 or >= 2", "0: every row")`.
    Rules: '>= N', '> N', '<= N', '< N', 'A..B' (inclusive), alternatives joined by ' or ' (minineo.checks.allowed).
    A value of None (an option not given) passes; NaN and inf never do. A failure is a UserError:
    `error: --lr must be a finite number greater than 0, got nan`.
    """
    for name, (value, rule, *why) in options.items():
        checks.in_rule(value, f"--{name.replace('_', '-')}", rule, why[0] if why else "")


def list_items(option: str, text: str) -> list[str]:
    """The comma-separated items of a list option (`--heads 1.0,1.2`), stripped; an empty item (`1.0,,1.2`, a
    trailing comma) or an item given twice is a UserError naming the option and the item, never dropped."""
    items = [item.strip() for item in text.split(",")]
    for i, item in enumerate(items):
        if not item:
            fail(f"{option} {clip(text, 80)}: item {i + 1} of {len(items)} is empty; separate the items with single "
                 "commas and no trailing comma")
    return checks.distinct(items, f"{option} {clip(text, 80)}")


def check_positive(**values: int) -> None:
    """Each option must be >= 1: `check_positive(top_k=top_k)` names --top-k in the error (see check_options)."""
    check_options(**{name: (value, ">= 1") for name, value in values.items()})


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


def claim_output(path: Path, what: str) -> None:
    """Claim `path` for the rest of the command (minineo.outputs.claim): a UserError at once when another
    process writes it, or when another option of this command names the same path."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return  # under torchrun only rank 0 writes a command's outputs (a harvest's shards are the folder's own)
    key = str(outputs.lock_file(path))  # one key per target, however it is spelled
    other = _state["claimed"].get(key)
    if other is not None and other != what:
        fail(f"{other} and {what} name the same path {path}; give each its own file")
    if _state["outputs"] is not None and other is None:
        _state["outputs"].enter_context(outputs.claim(path, what))
        _state["claimed"][key] = what


def output_path(path: Path, what: str, suffixes: tuple[str, ...] = (), default_suffix: str = "",
                kind: str | None = None) -> Path:
    """The file to write: its folder must exist and be writable, and it must not be a folder.

    With `suffixes`, its extension must be one of them; a name without one gets `default_suffix`. With `kind` (one
    of minineo.outputs.KINDS: "plot", "circuit", "eval"...), an existing file is replaced only when it holds that kind
    of artefact (minineo.outputs.refuse_replacing); every command passes its kind. The path is claimed for the rest
    of the command (`claim_output`): a second command writing it meanwhile fails at once.
    """
    path = checks.writable_file(path, what, suffixes, default_suffix)
    claim_output(path, what)
    if kind is not None:
        outputs.refuse_replacing(path, kind, what)
    return path


def output_folder(path: Path, what: str, kind: str) -> Path:
    """The folder to write (`harvest --out`, `tune-lens --out`): its parent must exist (checks.writable_folder); it
    is claimed for the rest of the command, and an existing one is replaced only when it holds that `kind` of
    artefact (minineo.outputs.refuse_replacing), all before any work."""
    path = checks.writable_folder(path, what)
    claim_output(path, what)
    outputs.refuse_replacing(path, kind, what)
    return path


def plot_path(plot: Optional[Path]) -> Optional[Path]:
    """The checked plot file (before any work is done), or None."""
    from minineo.cli.plots import SUFFIXES

    return None if plot is None else output_path(plot, "plot", SUFFIXES, default_suffix=".png", kind="plot")


def html_path(path: Optional[Path], option: str = "--html") -> Optional[Path]:
    """The checked HTML page to write (.html or .htm; no extension: .html; "x." is x.html), before any work; None
    stays None. A name that is only the extension (".html") is a UserError."""
    if path is None:
        return None
    if path.name.lower() in (".html", ".htm") or not path.name.strip("."):
        raise UserError(f"{option} {path}: {path.name!r} has no name before the extension; give a name such as "
                        f"{path.with_name('page.html') if path.name.strip('.') else path / 'page.html'}")
    if path.name.endswith("."):  # "x." names no extension: x.html, not x..html
        path = path.with_name(path.name.rstrip("."))
    return output_path(path, f"{option} page", (".html", ".htm"), default_suffix=".html", kind="page")


HtmlOption = typer.Option(None, "--html", help="also write an interactive HTML page to this path (one self-contained "
                                               "file, no network)")


# ---- answers and prompt pairs: shared by `patch` and `path-patch` -------------------------------------

METRIC_NAME = "normalised logit difference\n(0 = corrupted, 1 = clean)"


def answer_tokens(m, answer: str, wrong: str) -> tuple[list[int], int, int]:
    """(common prefix ids, answer id, wrong id): the answers compared on their first differing token.

    On a byte-level vocabulary " Mary" and " John" share the space: the prompt gets the space and the
    metric compares "M" with "J".
    """
    a, w = m.tokenizer.encode(answer), m.tokenizer.encode(wrong)
    if not a or not w:
        option, text = ("--answer", answer) if not a else ("--wrong", wrong)
        raise UserError(f"{option} {clip(text)} encodes to no token; give a non-empty answer")
    i = next((i for i, (x, y) in enumerate(zip(a, w)) if x != y), None)
    if i is None:
        raise UserError(f"--answer {clip(answer)} and --wrong {clip(wrong)} have no differing token (one is a prefix of the "
                        "other); give two answers that differ")
    return a[:i], a[i], w[i]


def prompt_pair(m, clean: str, corrupted: str, prefix: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both prompts' tokens (1, pos) with the answers' common prefix appended; a UserError unless they have
    the same length (patching lines them up position by position)."""
    clean_tokens, corrupted_tokens = m.to_tokens(clean), m.to_tokens(corrupted)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise UserError(f"the clean and corrupted prompts must tokenize to the same length: clean has "
                        f"{plural(clean_tokens.shape[1], 'token')}, corrupted has {corrupted_tokens.shape[1]}; "
                        "change one of them (e.g. names of the same token length)")
    extra = torch.tensor([prefix], dtype=torch.long, device=clean_tokens.device)
    return torch.cat([clean_tokens, extra], 1), torch.cat([corrupted_tokens, extra], 1)


def normalised_logit_diff(m, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor, answer_id: int,
                          wrong_id: int, answer: str, wrong: str) -> tuple[Callable, float, float]:
    """(metric, clean logit diff, corrupted logit diff): the metric maps logits to (ld - corrupted) / (clean -
    corrupted) of logit(answer) - logit(wrong) at the last position; a UserError when both runs agree."""

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, answer_id] - logits[0, -1, wrong_id]

    clean_ld, corrupted_ld = float(logit_diff(m(clean_tokens))), float(logit_diff(m(corrupted_tokens)))
    if abs(clean_ld - corrupted_ld) < 1e-6:
        fix = ("the two prompts are the same tokens; give a corrupted prompt that differs"
               if torch.equal(clean_tokens, corrupted_tokens) else
               "choose a corrupted prompt that changes the model's preference between the answers")
        raise UserError(f"the logit difference {show(answer)} - {show(wrong)} is the same on both prompts "
                        f"({signed(clean_ld, 4)}), so nothing can be recovered; {fix}")
    from minineo import checks, report

    for message in checks.metric_gap_warnings(clean_ld, corrupted_ld, "the clean logit difference",
                                              "the corrupted one"):
        report.warn(message)  # a near-zero or reversed gap makes every normalised number below meaningless

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logit_diff(logits) - corrupted_ld) / (clean_ld - corrupted_ld)

    return metric, clean_ld, corrupted_ld


def pair_labels(m, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor) -> list[str]:
    """Tick labels: the clean token, and clean/corrupted where the prompts differ."""
    from minineo.cli.display import token_texts

    return [show(c) if c == k else f"{show(c)}/{show(k)}"
            for c, k in zip(token_texts(m, clean_tokens[0]), token_texts(m, corrupted_tokens[0]))]
