"""Every example of README.md and of every docs/*.md page runs as written, in order per page, on the embedded models.

One test per page: its ```python blocks run in one namespace and its `minineo ...` lines (```bash blocks) run
through the command line, in the order the page shows them, in one folder (so a command can read what a block
above it wrote). Blocks marked `# needs gpt2` are left to tests/test_real_weights.py, which runs them where
GPT-2 is cached. The oracle for a python block is the page's own claim, checked where the page states one as an
`assert`; for a command, that it succeeds without an error or a traceback.
"""

from __future__ import annotations

import pytest
import torch
import typer
from readme_blocks import README, ROOT, Example, command_args, examples, needs_gpt2, pages, run, write_corpus
from typer.testing import CliRunner

from minineo.cli import app

runner = CliRunner()
PAGES = [page for page in pages() if any(not needs_gpt2(e.code) for e in examples(page))]


def page_id(page) -> str:
    return page.relative_to(ROOT).as_posix()


def run_command(example: Example) -> str:
    result = runner.invoke(app, command_args(example.code), terminal_width=100)
    output = result.output
    assert result.exit_code == 0, f"{example.where}: `{example.code}` exited {result.exit_code}\n{output}\n{result.exception!r}"
    assert "error" not in output.lower() and "Traceback" not in output, f"{example.where}: `{example.code}`\n{output}"
    return output


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_example_of_the_page_runs_in_order(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write acts/, my-lens/, cache.safetensors ... beside the corpus
    write_corpus(tmp_path)
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # pages name the repository's fixtures by their path from its root
    torch.manual_seed(0)
    namespace: dict = {"__name__": "docs"}
    for example in examples(page):
        if example.kind == "command":
            run_command(example)
        elif not needs_gpt2(example.code):
            try:
                run(example.code, namespace, example.where)
            except Exception as err:  # say which block failed, with its own traceback below
                pytest.fail(f"the python block at {example.where} failed: {type(err).__name__}: {err}")
    if "model" in namespace:
        assert namespace["model"].config.n_layers == 2, "an unmarked block loaded a hub model"  # it ran on a toy
    if page == README:  # the tour's own invariant: contributions sum (with the bias term) to the logit diff
        dla = namespace["dla"]
        assert abs(float(dla.contributions.sum() + dla.ln_bias_term[0] - dla.logit[0])) < 1e-4


def test_unmarked_blocks_need_no_hub_model():
    for page in pages():
        for example in examples(page):
            if example.kind == "python" and not needs_gpt2(example.code):
                assert 'load("gpt2"' not in example.code and "gpt-neo-125M" not in example.code, \
                    f"{example.where}: mark it `# needs gpt2`"


def test_the_pages_are_found_and_have_examples():
    """The glob finds the README and the capability pages, and each capability page shows runnable examples."""
    names = {page.name for page in PAGES}
    for name in ("README.md", "getting-started.md", "activations.md", "patching.md", "path-patching.md",
                 "circuits.md", "lenses.md", "evaluation.md", "sae.md", "batches.md", "zoo.md", "cli.md"):
        assert name in names, name
    readme = examples(README)
    assert any(e.kind == "python" for e in readme) and any(e.kind == "command" for e in readme)


def test_every_command_has_a_runnable_example_somewhere():
    """Each command of `minineo --help` appears in at least one example line the tests run (download needs the hub)."""
    shown = {command_args(e.code)[0] for page in pages() for e in examples(page) if e.kind == "command"}
    commands = set(typer.main.get_command(app).commands) - {"download"}
    assert commands <= shown, f"commands with no runnable example in README.md or docs/: {sorted(commands - shown)}"
