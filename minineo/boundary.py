"""The one error boundary's core, shared by the `minineo` app (minineo/cli/shared.py) and the `python -m` scripts.

A user's mistake (UserError, or an OSError: a path that cannot be read or written) is one `error: ...`
paragraph on stderr and a non-zero exit; any other exception is a bug and keeps its traceback. The app
wraps every command in it (`minineo.cli.shared`); the scripts (minineo.zoo.compare / train_tiny /
check_recipe, benchmarks, benchmarks.device) call `run_script(main)` and parse with `ScriptParser`, so a
malformed option is the same one line, naming the program as it is run (`python -m minineo.zoo.compare`).
MININEO_DEBUG=1 shows the traceback of user errors too. It sits below the CLI so that the scripts, which
the CLI may import, never import the CLI.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any, Callable

from rich.console import Console
from rich.text import Text

from minineo.errors import UserError

err_console = Console(stderr=True)


def debugging_by_environment() -> bool:
    """MININEO_DEBUG=1 (or true/yes/on): user errors keep their traceback."""
    return os.environ.get("MININEO_DEBUG", "").lower() in ("1", "true", "yes", "on")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (e.g. skipped documents) as one `warning:` paragraph on stderr, without source lines."""
    err_console.print(Text("warning: ", style="bold yellow") + Text(str(message)), soft_wrap=True)


def print_error(err: BaseException) -> None:
    """A user's mistake (UserError, or an OSError: a path) or a script's reported failure (ScriptFailure) as the
    one `error: ...` paragraph on stderr."""
    text = str(err) if isinstance(err, (UserError, ScriptFailure)) else f"{err}. Check the path and its permissions."
    err_console.print(Text("error: ", style="bold red") + Text(text), soft_wrap=True)


class ScriptUsageError(UserError):
    """A malformed command line of a `python -m` script (argparse's error), exit status 2 as argparse's."""


class ScriptParser(argparse.ArgumentParser):
    """argparse for the `python -m` scripts (minineo.zoo.*, benchmarks): the program is named as it is run
    (`python -m minineo.zoo.compare`), and a malformed option is one `error:` line through `run_script`'s
    boundary (argparse's usage block and exit status 2 otherwise)."""

    def __init__(self, module: str, **kwargs: Any):
        super().__init__(prog=f"python -m {module}", **kwargs)

    def error(self, message: str):  # argparse's hook for every command-line mistake
        raise ScriptUsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        """argparse's parse, then every list option (nargs '+' / '*', action 'append') names each item once
        (minineo.checks.distinct): `--models tiny-neo tiny-neo` is refused, not run twice."""
        from minineo import checks

        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            listed = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
            values = getattr(parsed, action.dest, None)
            if listed and isinstance(values, list) and values is not action.default:
                try:
                    checks.distinct(values, "/".join(action.option_strings) or action.dest)
                except UserError as err:
                    self.error(str(err))
        return parsed, extras


def comma_list(allowed: tuple[str, ...] | None = None, convert: Callable[[str], Any] | None = None) -> Callable[[str], list]:
    """An argparse `type=` for a comma-separated option (`--models a,b`): no empty item, none outside `allowed`,
    none twice (minineo.checks.distinct); `convert` turns each item into its value (raising ValueError or
    argparse.ArgumentTypeError for a malformed one)."""

    def parse(text: str) -> list:
        from minineo import checks

        items = [item.strip() for item in text.split(",")]
        values = []
        try:
            checks.distinct([item for item in items if item], repr(text))
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        for i, item in enumerate(items):
            if not item:
                raise argparse.ArgumentTypeError(f"{text!r}: item {i + 1} of {len(items)} is empty; separate the items "
                                                 "with single commas and no trailing comma")
            if allowed is not None and item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
            values.append(convert(item) if convert else item)
        try:
            return checks.distinct(values, repr(text))
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.comma_list = True  # type: ignore[attr-defined]  (tests/test_list_options.py finds the list options by it)
    return parse


class ScriptFailure(Exception):
    """A script ran and its result is a failure the user is told of (a training run that failed, thresholds missed):
    one `error:` line and exit status 1 through `run_script`, not a bug's traceback and not a user's mistake."""


def run_script(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The CLI's boundary around a `python -m` script's main(): a UserError or OSError is one `error:`
    paragraph and exit status 1 (2 for a malformed command line); a ScriptFailure, or a `SystemExit("message")`
    (Python would print the bare message), is one `error:` line and exit status 1 too; warnings print as
    `warning:` lines; any other exception is a bug and keeps its traceback. --debug is not an option of the
    scripts: MININEO_DEBUG=1 shows every traceback."""
    from minineo import report

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            report.quiet_third_parties()  # other libraries' progress bars and log lines stay out of the output
            return main(*args, **kwargs)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            raise
        print_error(ScriptFailure(str(exit_.code)))
        raise SystemExit(1) from None
    except ScriptFailure as err:
        if debugging_by_environment():
            raise
        print_error(err)
        raise SystemExit(1) from None
    except (UserError, OSError) as err:
        if debugging_by_environment():
            raise
        print_error(err)
        raise SystemExit(2 if isinstance(err, ScriptUsageError) else 1) from None
    except KeyboardInterrupt:
        if debugging_by_environment():
            raise
        err_console.print(Text("interrupted", style="bold red"))
        raise SystemExit(130) from None
