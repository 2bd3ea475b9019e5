"""The fuzz harness over the command line (issue 29 part 2): every command of the typer app, found by walking it,
gets each of its options and arguments replaced, one at a time, by bad text (negative, zero, fractional, NaN and
huge numbers, non-numbers, empty and unknown strings, paths that do not exist) on an otherwise valid invocation.

Acceptable outcomes: exit 0 (not for a value that must be refused: NaN / inf for a number, a negative count), click's
usage error (exit 2) naming the option, or minineo's boundary (exit 1, one `error:` paragraph on stderr naming the
option or argument). A traceback, an exception that escapes the boundary, or any other exit code fails. Commands run
in-process through typer's CliRunner, on the embedded tiny model, in a temporary folder.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import fuzz_walk
from minineo.checkpoints.hub import EMBEDDED, EMBEDDED_NAME
from minineo.cli import app

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands
PROMPT = "When Mary and John went, John gave it to"
CORRUPTED = "When Mary and John went, Mary gave it to"

# Commands left out, each with why.
CLI_OPT_OUT = {
    "download": "needs the network (tests run with HF_HUB_OFFLINE=1); its offline errors are tested in test_hub.py",
    "discover-compare": "each accepted call runs ACDC, EAP and EAP-IG on two tasks of every model (tens of seconds); "
                        "its one option is the shared --model, fuzzed on every other command; its table is checked "
                        "in tests/test_discovery_docs.py",
}

# Options that count something: a negative value must be refused, never read as a slice or "from the end".
COUNT_OPTIONS = {"--top", "--top-k", "--n", "--n-seqs", "--seq-len", "--steps", "--batch-size", "--max-tokens",
                 "--context", "--shard-rows", "--sample", "--generate"}


def base_invocation(command: str, folder: Path) -> list[str]:
    """A valid, quick invocation of `command` (required arguments and options filled, sizes kept small)."""
    corpus = str(fuzz_walk.corpus_file())
    out = str(folder / "out")
    return {
        "run": ["run", PROMPT, "--generate", "2"],
        "cache": ["cache", PROMPT],
        "embeddings": ["embeddings", "--top", "3"],
        "lens": ["lens", PROMPT],
        "heads": ["heads", "--seq-len", "8", "--n-seqs", "2"],
        "attribute": ["attribute", PROMPT, "--answer", " Mary"],
        "ablate": ["ablate", PROMPT, "--answer", " Mary", "--heads", "1.0"],
        "ioi": ["ioi", "--n", "2", "--no-paths", "--no-ablation"],
        "harvest": ["harvest", corpus, "--names", "blocks.0.resid_post", "--out", out, "--context", "16",
                    "--max-tokens", "32"],
        "tune-lens": ["tune-lens", corpus, "--out", out, "--steps", "1", "--batch-size", "2", "--context", "16"],
        "patch": ["patch", PROMPT, CORRUPTED, "--answer", " Mary", "--wrong", " John"],
        "eval": ["eval", corpus, "--context", "16", "--max-tokens", "64"],
        "sae-eval": ["sae-eval", str(fuzz_walk.SAE_FOLDER), corpus, "--context", "16", "--max-tokens", "64"],
        "circuits": ["circuits", "--top", "3"],
        "path-patch": ["path-patch", PROMPT, CORRUPTED, "--answer", " Mary", "--wrong", " John"],
        "discover": ["discover", "--task", "ioi", "--n", "2", "--method", "eap", "--top", "5", "--out", out + ".json"],
        "view": ["view", PROMPT, "--out", out + ".html"],
        "view-circuit": ["view-circuit", str(fuzz_walk.DATA / "eap_ig" / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"),
                         "--out", out + ".html"],
    }.get(command)


def annotation(param) -> typing.Any:
    kind = param.type_descriptor.annotation
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def bad_texts(param) -> list[tuple[str, bool, str]]:
    """(text, must it be refused, label) for one option or argument."""
    kind = annotation(param)
    flag = param.opts[0] if param.opts and param.opts[0].startswith("-") else None
    if kind is bool:
        return []  # flags: nothing to get wrong
    if kind is int:
        return [("-1", flag in COUNT_OPTIONS, "-1"), ("0", False, "0"), ("1.5", True, "a fraction"),
                ("abc", True, "not a number"), ("nan", True, "nan")]
    if kind is float:
        return [("nan", True, "nan"), ("inf", True, "inf"), ("-1", False, "-1"), ("abc", True, "not a number")]
    if kind is Path or isinstance(kind, type) and issubclass(kind, Path):
        # an input there does not exist, and an output there is refused rather than its folders created (mkdir -p
        # made /no/such/folder/file as the test ran, and later runs found it there); relative to the command's fresh
        # temporary folder, so nothing outside it can make the path exist: both must fail
        return [("no-such-folder/file", True, "a path in no folder"), ("", False, "an empty path")]
    return [("", False, "an empty string"), ("no-such-thing", False, "an unknown string")]


def replaced(args: list[str], param, text: str) -> list[str]:
    """`args` with this parameter set to `text` (an option replaced or appended; an argument replaced in place)."""
    if param.opts and param.opts[0].startswith("-"):
        names = set(param.opts) | set(param.secondary_opts)
        out, skip = [], False
        for arg in args:
            if skip:
                skip = False
                continue
            if arg in names:
                skip = True
                continue
            out.append(arg)
        return out + [param.opts[0], text]
    arguments = [p for p in COMMANDS[args[0]].params if not (p.opts and p.opts[0].startswith("-"))]
    index = 1 + arguments.index(param)
    return args[:index] + [text] + args[index + 1:]


def said(param) -> set[str]:
    """How an error message may name this parameter."""
    names = {*param.opts, *param.secondary_opts, param.name, param.name.upper(), param.name.replace("_", "-")}
    return {n for n in names if n}


def judge(args: list[str], param, must_refuse: bool, label: str) -> str | None:
    result = runner.invoke(app, args, terminal_width=200)
    shown = " ".join(args[:1] + [f"{param.opts[0] if param.opts else param.name}={label!r}"])
    output = result.output + (result.stderr or "")
    if "Traceback" in output:
        return f"{shown}: a traceback: {output[-300:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"{shown}: {type(result.exception).__name__} escaped the boundary: {str(result.exception)[:300]}"
    if result.exit_code == 0:
        return f"{shown}: exit 0 for a value that must be refused" if must_refuse else None
    text = " ".join((result.stderr or result.output).split())
    if result.exit_code == 2:  # click's usage error
        return None if any(n in text for n in said(param)) else f"{shown}: a usage error that does not name it: {text[:300]}"
    if result.exit_code == 1:
        if not text.startswith("error: "):
            return f"{shown}: exit 1 without an `error:` paragraph: {text[:300]}"
        if not any(n in text for n in said(param)):
            return f"{shown}: the error does not name {sorted(said(param))}: {text[:300]}"
        return None
    return f"{shown}: exit code {result.exit_code}: {text[:300]}"


@pytest.fixture(autouse=True)
def shared_embedded_model(monkeypatch):
    """The embedded model is loaded once for every invocation (the commands never change a loaded model); any other
    --model value goes through minineo.load itself, so loading is fuzzed too."""
    from minineo.checkpoints import loading
    from minineo.cli import shared

    real = loading.load
    loaded = {}

    def load(name=EMBEDDED_NAME, **kwargs):
        key = (str(name), repr(sorted(kwargs.items())))
        if name not in EMBEDDED:
            return real(name, **kwargs)
        if key not in loaded:
            loaded[key] = real(name, **kwargs)
        return loaded[key]

    monkeypatch.setattr(loading, "load", load)
    monkeypatch.setattr(shared, "load", load)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fuzz_command(command, tmp_path, monkeypatch):
    if command in CLI_OPT_OUT:
        pytest.skip(CLI_OPT_OUT[command])
    monkeypatch.chdir(tmp_path)
    base = base_invocation(command, tmp_path)
    assert base is not None, (f"the command {command!r} has no valid invocation in base_invocation() of "
                              "tests/test_fuzz_cli.py; add one (or opt it out in CLI_OPT_OUT, with the reason)")
    valid = runner.invoke(app, base, terminal_width=200)
    assert valid.exit_code == 0, (base, valid.output, valid.stderr, valid.exception)
    problems = []
    for param in COMMANDS[command].params:
        if param.name in ("device",):  # one shared check, fuzzed once below
            continue
        for text, must_refuse, label in bad_texts(param):
            problem = judge(replaced(base, param, text), param, must_refuse, label)
            if problem:
                problems.append(problem)
    assert not problems, "\n  ".join([command] + problems)


def test_every_device_option_refuses_a_bad_device():
    for command, cmd in sorted(COMMANDS.items()):
        if command in CLI_OPT_OUT or not any(p.name == "device" for p in cmd.params):
            continue
        base = base_invocation(command, Path("/tmp"))
        result = runner.invoke(app, base + ["--device", "banana"], terminal_width=200)
        assert result.exit_code == 1 and "--device banana" in result.stderr, (command, result.output)
