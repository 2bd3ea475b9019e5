"""The fourth newcomer pass's findings outside circuit discovery, each against the behaviour it should have: a metric
that is NaN or infinite on the clean or corrupted run is refused by activation, attribution and path patching (every
cell computed from it would be NaN); a repeated path-patching sender or receiver is refused (it was merged into one
silently)."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo import analysis
from minineo.errors import UserError

CLEAN = "When Mary and John went to the store, John gave a drink to "
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to "


@pytest.fixture(scope="module")
def runs():
    model = minineo.load("tiny-neo")
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    _, cache = model.run_with_cache(clean)
    return model, clean, corrupted, cache


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 77] - logits[:, -1, 74]).mean()


NON_FINITE = {"nan": lambda logits: logit_diff(logits) * float("nan"),
              "inf": lambda logits: logit_diff(logits) * float("inf"),
              "log of a negative": lambda logits: torch.log(-logit_diff(logits).abs() - 1)}


@pytest.mark.parametrize("kind", sorted(NON_FINITE))
@pytest.mark.parametrize("call", ["activation_patching", "attribution_patching", "path_patching"])
def test_a_non_finite_metric_is_refused_not_spread_over_every_cell(runs, call, kind):
    model, clean, corrupted, cache = runs
    metric = NON_FINITE[kind]
    with pytest.raises(UserError, match=r"the metric returned (nan|inf|-inf) on the (corrupted|clean) (logits|run); "
                                        r"it must be a finite number"):
        if call == "path_patching":
            analysis.path_patching(model, clean, corrupted, metric)
        else:
            getattr(analysis, call)(model, corrupted, cache, metric, "resid_pre")


def test_a_metric_finite_on_the_runs_but_nan_on_a_patched_one_is_refused(runs):
    """Finite on the clean and corrupted runs, NaN once a patch moves the logits off them (a data-dependent
    division by zero): the cells would be NaN silently."""
    model, clean, corrupted, cache = runs
    clean_logits = model(clean)
    corrupted_logits = model(corrupted)

    def metric(logits):  # finite exactly on the two unpatched runs
        on_a_run = torch.equal(logits[:, -1], clean_logits[:, -1]) or torch.equal(logits[:, -1], corrupted_logits[:, -1])
        return logit_diff(logits) if on_a_run else logit_diff(logits) * float("nan")

    with pytest.raises(UserError, match="the metric returned nan on the (patched run|run with the senders)"):
        analysis.activation_patching(model, corrupted, cache, metric, "resid_pre")
    with pytest.raises(UserError, match="the metric returned nan on the (patched run|run with the senders)"):
        analysis.path_patching(model, clean, corrupted, metric)


def test_a_repeated_sender_or_receiver_is_refused_not_merged(runs):
    model, clean, corrupted, _ = runs
    with pytest.raises(UserError, match=r"senders names \(0, 0\) twice"):
        analysis.path_patching(model, clean, corrupted, logit_diff, [(0, 0), (0, 0)])
    with pytest.raises(UserError, match=r"receivers names \(1, 0, 'q'\) twice"):
        analysis.path_patching(model, clean, corrupted, logit_diff, [(0, 0)], [(1, 0, "q"), (1, 0, "q")])
    once = analysis.path_patching(model, clean, corrupted, logit_diff, [(0, 0)], [(1, 0, "q")])
    assert torch.isfinite(once)


def test_a_short_train_tiny_run_says_how_many_steps_its_loss_averages_and_warns_once(tmp_path, capsys):
    """3 steps: the loss is the mean of those 3 (not "the last 100"), the card says the same, and the behaviour
    check's IOI gap is one warning about the card's figures, not two about prompts the user never chose."""
    from minineo.zoo import train_tiny

    out = tmp_path / "scratch"
    train_tiny.main(["--steps", "3", "--out", str(out), "--report", "0"])
    said = capsys.readouterr()
    text = " ".join((said.out + said.err).split())
    assert "mean training loss over the last 3 steps" in text
    assert "Mean training loss over the last 3 steps" in (out / "README.md").read_text()
    assert text.count("warning:") == 1 and "the card's IOI figures" in text, text
    assert "choose prompts and answers" not in text


def test_train_tiny_refuses_a_negative_report_interval(tmp_path, capsys):
    from minineo.zoo import train_tiny

    from minineo.boundary import ScriptUsageError

    with pytest.raises(ScriptUsageError, match=r"--report must be 0 \(never\) or a number of steps"):
        train_tiny.main(["--steps", "3", "--out", str(tmp_path / "m"), "--report", "-1"])
    assert not (tmp_path / "m").exists()


def test_transformers_imported_after_the_quieting_shows_no_progress_bar():
    """quiet_third_parties before transformers is imported (a script's boundary runs it first): the import that
    comes later is quieted too, so "Loading weights" bars never reach a script's output."""
    import subprocess
    import sys

    code = ("from minineo import report; report.quiet_third_parties(); import transformers; "
            "from transformers.utils import logging; print(logging.is_progress_bar_enabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_the_circuit_page_of_a_graph_with_a_nan_score_is_refused():
    from minineo import views
    from minineo.discovery import Graph

    graph = Graph.from_model(minineo.load("tiny-gpt2"))
    graph.scores = torch.randn_like(graph.scores)
    graph.scores.view(-1)[0] = float("nan")
    with pytest.raises(UserError, match=r"views.circuit: graph.scores holds nan for the edge 'input->a0.h0<q>'"):
        views.circuit(graph)


def test_numbers_never_print_as_negative_zero():
    from minineo.cli.display import number, signed

    assert [number(-0.00004), signed(-0.00004), signed(0.0), number(-0.0006), signed(0.25), number(torch.tensor(-1.5))] \
        == ["0.000", "+0.000", "+0.000", "-0.001", "+0.250", "-1.500"]
    assert number(-0.00004, 4) == "-0.0000"[1:] and signed(float("nan")) == "nan"


def test_patch_table_shows_no_negative_zero():
    """The README's `minineo patch` showed `-0.000` for cells whose patch changes nothing."""
    from typer.testing import CliRunner

    from minineo.cli import app

    result = CliRunner().invoke(app, ["patch", CLEAN.strip(), CORRUPTED.strip(), "--answer", " Mary", "--wrong", " John",
                                      "--site", "resid_pre", "--per", "pos", "--top", "60"])
    assert result.exit_code == 0, result.output
    assert "-0.000" not in result.output and "0.000" in result.output, result.output


def test_patch_with_identical_prompts_says_the_prompts_are_the_same_not_the_answers():
    from typer.testing import CliRunner

    from minineo.cli import app

    result = CliRunner().invoke(app, ["patch", CLEAN.strip(), CLEAN.strip(), "--answer", " Mary", "--wrong", " John"])
    assert result.exit_code == 1
    assert "the two prompts are the same tokens; give a corrupted prompt that differs" in " ".join(result.output.split())


def test_acdc_on_pairs_with_the_same_prompts_is_refused_with_kl_too():
    from minineo.discovery import Pairs, acdc

    model = minineo.load("tiny-gpt2")
    pairs = Pairs.from_text(model, [CLEAN], [CLEAN], ["M"], ["J"])
    for kl in (False, True):
        with pytest.raises(UserError, match="acdc: the one pair has the same clean and corrupted prompts"):
            acdc(model, pairs, kl=kl)


def test_the_circuit_page_of_a_loaded_graph_keeps_its_files_words(tmp_path):
    """views.circuit(load_graph(file)) reads the same task record as views.circuit(file)."""
    from minineo import views
    from minineo.discovery import load_graph
    from typer.testing import CliRunner

    from minineo.cli import app

    out = tmp_path / "acdc.json"
    result = CliRunner().invoke(app, ["discover", "--model", "tiny-gpt2", "--task", "induction", "--n", "4",
                                      "--method", "acdc", "--kl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = minineo.load("tiny-gpt2")
    from_file = views.circuit(out).html
    from_graph = views.circuit(load_graph(out, model)).html
    assert "ACDC" in from_file and "KL divergence" in from_graph and "ACDC" in from_graph
