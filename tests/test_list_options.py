"""A repeated item in a list option is refused (docs/outputs.md), in every command and script, by the one check
(minineo.checks.distinct): the CLI's comma-separated options (cli.shared.list_items) and options given several
times (the boundary), and every `python -m` script's list options (ScriptParser: nargs '+' / '*'; comma lists:
minineo.boundary.comma_list). The guards below find the list options by introspection, so a new one is tested
or the guard fails."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import minineo
from minineo.boundary import ScriptParser, ScriptUsageError
from minineo.cli import app

runner = CliRunner()

CLI_CASES = {  # (command, option): a command line repeating an item of the option
    ("ablate", "--heads"): ["ablate", "When Mary and John went", "--answer", " to", "--heads", "1.0,1.2,1.0"],
    ("harvest", "--names"): ["harvest", "corpus.txt", "--names", "blocks.0.resid_post,blocks.0.resid_post", "--out", "acts"],
    ("path-patch", "--receivers"): ["path-patch", "When Mary and John went to the store, John gave a drink to",
                                    "When Mary and John went to the store, Lucy gave a drink to", "--answer", " Mary",
                                    "--wrong", " John", "--receivers", "1.0:q,1.0:q"],
    ("discover-compare", "--model"): ["discover-compare", "-m", "tiny-neo", "-m", "tiny-neo"],
}


def _cli_list_options() -> set[tuple[str, str]]:
    """(command, option) for every option given several times, or whose help shows a comma-separated list."""
    found = set()
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            help_text = getattr(param, "help", "") or ""
            if param.multiple or "comma" in help_text.lower() or re.search(r"\w,\w", help_text):
                found.add((name, max(param.opts, key=len)))
    return found


def test_every_cli_list_option_is_tested():
    assert _cli_list_options() == set(CLI_CASES)


@pytest.mark.parametrize("case", sorted(CLI_CASES), ids="-".join)
def test_a_repeated_item_in_a_cli_list_option_is_one_error(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("When Mary and John went to the store.\n" * 4)
    result = runner.invoke(app, CLI_CASES[case])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "twice; give each item once" in result.output, result.output
    assert case[1] in result.output and "Traceback" not in result.output


SCRIPT_CASES = {  # (module, option): argv repeating an item of the option
    ("minineo.zoo.compare", "--models"): ["--models", "tiny-neo", "tiny-neo"],
    ("minineo.discovery.compare", "--models"): ["--models", "tiny-neo", "tiny-neo"],
    ("minineo.zoo.check_recipe", "--seeds"): ["--seeds", "0", "1", "0"],
    ("benchmarks.run", "--models"): ["--models", "gpt2-small,gpt2-small"],
    ("benchmarks.run", "--dtypes"): ["--dtypes", "float32,float32"],
    ("benchmarks.run", "--shapes"): ["--shapes", "8x128,1x64,8x128"],
    ("benchmarks.run", "--generation"): ["--generation", "1x8+8,1x8+8"],
    ("benchmarks.discovery", "--models"): ["--models", "tiny-neo,tiny-neo"],
    ("benchmarks.discovery", "--methods"): ["--methods", "eap,exact,eap"],
    ("benchmarks.discovery", "--combine"): ["--combine", "a.json", "a.json"],
    ("benchmarks.commands", "--only"): ["--only", "run", "run"],
    ("benchmarks.neo_attention", "--shapes"): ["--shapes", "1x128,1x128"],
}

ROOT = Path(__file__).resolve().parent.parent
# the peer-venv scripts run in TransformerLens 3's venv (they import it and tests/ by path): not in this walk
PEER_SCRIPTS = {"benchmarks.tl3_head_inputs": "runs in TransformerLens 3's venv, importing tl3.py by path"}


def _scripts() -> tuple[str, ...]:
    """Every `python -m` script: a module of benchmarks/ or minineo/ whose main runs through run_script (so a new
    script is walked without anyone listing it)."""
    files = sorted(ROOT.glob("benchmarks/*.py")) + sorted((ROOT / "minineo").rglob("*.py"))
    found = []
    for path in files:
        if path.name in ("__main__.py", "boundary.py") or "run_script(main" not in path.read_text():
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module not in PEER_SCRIPTS:
            found.append(module)
    return tuple(found)


SCRIPTS = _scripts()


class _Parsed(Exception):
    pass


def _script_list_options(monkeypatch) -> set[tuple[str, str]]:
    """(module, option) for every list option of every script's ScriptParser: nargs '+' / '*', action 'append', or
    a comma_list type. Each script's main() is stopped where it parses."""
    found, parsers = set(), []

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise _Parsed

    monkeypatch.setattr(ScriptParser, "parse_known_args", capture)
    for module in SCRIPTS:
        parsers.clear()
        with pytest.raises(_Parsed):
            importlib.import_module(module).main([])
        for action in parsers[0]._actions:
            if action.nargs in ("+", "*") or type(action).__name__ == "_AppendAction" \
                    or getattr(action.type, "comma_list", False):
                found.add((module, max(action.option_strings, key=len)))
    return found


def test_every_script_list_option_is_tested(monkeypatch):
    assert _script_list_options(monkeypatch) == set(SCRIPT_CASES)


@pytest.mark.parametrize("case", sorted(SCRIPT_CASES), ids="-".join)
def test_a_repeated_item_in_a_script_list_option_is_one_error(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module, option = case
    with pytest.raises(ScriptUsageError, match=rf"{re.escape(option)}.* names .* twice; give each item once"):
        importlib.import_module(module).main(SCRIPT_CASES[case])


def test_every_minineo_script_is_walked():
    """A new `python -m minineo.X` script (a module with a __main__ guard) joins SCRIPTS, so its list options are
    checked too."""
    package = Path(minineo.__file__).parent
    scripts = {".".join(("minineo", *p.relative_to(package).with_suffix("").parts)) for p in package.rglob("*.py")
               if 'if __name__ == "__main__":' in p.read_text() and p.name != "__main__.py"}
    assert scripts <= set(SCRIPTS), sorted(scripts - set(SCRIPTS))
