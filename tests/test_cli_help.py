"""Every command's --help reads well at 80 and 120 columns: no text broken mid-sentence where a source line ended,
no description cut short (`python -m benchmarks --help` once stopped at "against HF transformers (and").

The rendered check is rich's own wrapping rule: within a paragraph, a line ends early only when the next word would
not have fitted on it. A line break that the width did not force came from the source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from benchmarks import description
from minineo.cli import app
from minineo.cli.shared import App

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (80, 120)
COMMANDS = sorted(typer.main.get_command(app).commands)


def render_help(application: typer.Typer, args: list[str], width: int) -> str:
    """`--help` as a terminal of `width` columns shows it (typer fixes TERMINAL_WIDTH when it first renders help,
    so the width is set where it reads it, and COLUMNS for rich)."""
    import typer.rich_utils

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.rich_utils, "MAX_WIDTH", width)
        result = CliRunner().invoke(application, [*args, "--help"], env={"COLUMNS": str(width)}, terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def forced_breaks_only(lines: list[str], width: int) -> list[str]:
    """The lines of one paragraph that ended although the next line's first word would have fitted on them."""
    early = []
    for line, after in zip(lines, lines[1:]):
        if len(line) + 1 + len(after.split()[0]) <= width:
            early.append(line)
    return early


def description_paragraphs(output: str) -> list[list[str]]:
    """The description under `Usage:` (before the first panel), as paragraphs of stripped lines."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs + ([current] if current else [])


def commands_panel_entries(output: str) -> list[tuple[list[str], int]]:
    """Each command's help in `minineo --help`'s Commands panel: (its lines, the column's width)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("╭─ Commands"))
    entries = []
    for line in lines[start + 1:]:
        if line.startswith("╰"):
            break
        inner = line[1:line.rindex("│")]  # between the panel's borders
        name, text = re.match(r"( \S*\s+)(.*)", inner).groups()
        width = len(inner) - len(name) - 1  # the text column, less its right padding
        if name.strip():
            entries.append(([text.rstrip()], width))
        else:
            entries[-1][0].append(text.rstrip())
    return entries


def test_the_check_sees_a_docstring_wrapped_in_the_source():
    """The rule flags what plain Typer prints for a source-wrapped docstring (the bug this file guards)."""
    plain = typer.Typer()

    @plain.command()
    def patch(clean: str) -> None:
        """Activation patching: run CORRUPTED with one site of CLEAN's run patched in, for every layer and
        position (or head), and report the normalised logit difference of ANSWER over WRONG.

        Answers of several tokens are compared on their first differing token, after the prompt plus
        the tokens they share."""

    @plain.command()
    def other() -> None:
        """Another command."""

    output = render_help(plain, ["patch"], 120)
    assert any(forced_breaks_only(p, 120 - 2) for p in description_paragraphs(output))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_wraps_only_at_the_width(command, width):
    output = render_help(app, [command], width)
    assert max(len(line) for line in output.splitlines()) <= width, "the help ignored the terminal's width"
    for paragraph in description_paragraphs(output):
        assert not forced_breaks_only(paragraph, width - 2), f"minineo {command} --help at {width} columns:\n{output}"
    options = output[output.find("╭─ Options"):]
    assert "…" not in options, f"an option's name or help is cut at {width} columns:\n{output}"


@pytest.mark.parametrize("width", WIDTHS)
def test_the_command_list_wraps_only_at_the_width(width):
    output = render_help(app, [], width)
    entries = commands_panel_entries(output)
    assert len(entries) == len(COMMANDS)
    for lines, column in entries:
        assert not forced_breaks_only(lines, column), f"minineo --help at {width} columns:\n{output}"


def test_every_help_text_is_one_line_per_paragraph():
    """What the commands register: paragraphs without single line breaks, options' help on one line."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (name, paragraph)
        for param in command.params:
            assert "\n" not in (getattr(param, "help", None) or ""), (name, param.name)


def test_an_explicit_help_is_kept():
    application = App()

    @application.command(help="Given by hand.")
    def hello() -> None:
        """The docstring."""

    @application.command()
    def other() -> None:
        """Another."""

    assert "Given by hand." in render_help(application, ["hello"], 80)


@pytest.mark.parametrize("width", WIDTHS)
def test_python_m_benchmarks_help_shows_its_whole_description(width):
    env = {**os.environ, "COLUMNS": str(width)}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m benchmarks")
    import benchmarks.run

    expected = description(benchmarks.run.__doc__)
    assert expected.endswith(".") and "(and TransformerLens when installed)" in expected
    assert expected in " ".join(result.stdout.split()), result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= width


def test_no_benchmark_cuts_its_docstring_for_argparse():
    for path in (ROOT / "benchmarks").glob("*.py"):
        source = path.read_text()
        assert "description=__doc__.splitlines()[0]" not in source and 'description=__doc__.split("\\n\\n")[0]' \
            not in source, path.name


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_flag_reads_as_a_flag_without_a_value_placeholder(command, width):
    """`--debug`, `--kl`, `--help` take no value, so the help shows no `<bool>` beside them (typer 0.29 did)."""
    output = render_help(app, [command] if command else [], width)
    assert "<bool>" not in output, f"minineo {command or ''} --help at {width} columns:\n{output}"
    flags = [param.opts[0] for param in (typer.main.get_command(app).commands[command] if command else
                                         typer.main.get_command(app)).params if getattr(param, "is_flag", False)]
    for flag in flags:  # the flag's row: its name, then (after any --no- twin) straight to its help
        for row in (line for line in output.splitlines() if flag in line):  # a long name may fold at 80 columns
            assert not re.search(rf"{re.escape(flag)}\s+(--no-\S+\s+)?<", row), row


def test_no_help_text_names_a_moved_import_path():
    """`minineo --help` said "(see minineo.harvest)", a deprecated path (minineo.moved): help names current modules."""
    import re

    import typer.main
    from typer.testing import CliRunner

    from minineo.cli import app
    from minineo.moved import MOVED

    group = typer.main.get_command(app)
    texts = {name: " ".join((command.help or "").split()) for name, command in group.commands.items()}
    texts["--help"] = " ".join(CliRunner().invoke(app, ["--help"], terminal_width=300).output.split())
    for name, text in texts.items():
        for old in MOVED:
            assert not re.search(re.escape(old) + r"(?![\w.])", text), f"{name}'s help names {old}: use {MOVED[old]}"
    assert "minineo.data.harvest" in texts["harvest"]
