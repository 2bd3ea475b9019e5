"""docs/discovery.md runs as written: its python blocks in order (printing what the page shows), its `minineo`
lines, and its comparison table is what `python -m minineo.discovery.compare` prints."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from minineo.cli import app

PAGE = Path(__file__).resolve().parents[1] / "docs" / "discovery.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)


def test_the_python_blocks_run_in_order_and_print_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, code in enumerate(blocks("python"), 1):
        shown = [line[2:] for line in code.splitlines() if line.startswith("# ")]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/discovery.md, python block {number}", "exec"), namespace)
        assert out.getvalue().splitlines() == shown, f"python block {number}"


def test_the_minineo_lines_run_and_the_first_prints_the_pages_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = [line for block in blocks("bash") for line in block.splitlines() if line.startswith("minineo ")
                and not line.startswith("minineo discover-compare")]  # its table: the test below
    assert len(commands) == 2
    outputs = []
    for command in commands:
        result = CliRunner().invoke(app, shlex.split(command)[1:], catch_exceptions=False, terminal_width=100)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    shown = blocks("text")[0]
    assert " ".join(outputs[0].split()) == " ".join(shown.split())
    assert (tmp_path / "circuit.json").is_file() and (tmp_path / "circuit.png").is_file()


def test_the_comparison_table_is_what_the_command_prints():
    from minineo.discovery.compare import table

    quoted = re.search(r"<!-- discovery-compare: python -m minineo.discovery.compare -->\n(.*?)\n"
                       r"<!-- /discovery-compare -->", PAGE.read_text(), flags=re.S).group(1)
    assert quoted == table()
