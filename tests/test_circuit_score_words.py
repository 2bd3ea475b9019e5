"""What a circuit's scores are, said where a reader looks: the HTML page and `discover --plot`'s legend name the
file's recorded method (estimated for the gradient methods, exact for exact, ACDC's change for acdc, with its rule for
edges removed without a forward pass), and word the colours for the file's unit: with a logit difference blue
(removing the edge lowers it) marks an edge the circuit needs, with ACDC's KL divergence from the clean run (higher
is worse) red does. Files that record nothing (EAP-IG's own) keep the general words. Numbers that round to zero
print as 0.000, never -0.000."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minineo import views
from minineo.cli import app, circuit_plot
from minineo.cli.discover import KL_UNIT, LOGIT_UNIT, curve_table
from minineo.discovery import files
from minineo.discovery.faithfulness import FaithfulnessCurve

runner = CliRunner()
EAP = Path(__file__).parent / "data" / "eap_ig"
GRADIENT_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted")



@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """Two circuit files and PNGs `minineo discover` writes: ACDC with --kl on induction, clean-corrupted on IOI."""
    folder = tmp_path_factory.mktemp("found")
    runs = {"acdc-kl": ["--task", "induction", "--n", "4", "--method", "acdc", "--kl"],
            "clean-corrupted": ["--task", "ioi", "--n", "4", "--method", "clean-corrupted", "--top", "10"]}
    for name, args in runs.items():
        result = runner.invoke(app, ["discover", "--model", "tiny-neo", *args, "--out", str(folder / f"{name}.json")])
        assert result.exit_code == 0, result.output
    return folder


def page_text(source) -> str:
    """The circuit page's visible text outside its script, tags stripped, one space between words."""
    page = views.circuit(source).html
    body = re.sub(r"<script.*?</script>", " ", page[page.index("<body"):], flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def with_task(**task) -> dict:
    document = json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json").read_text())
    return {**document, "task": {"name": "ioi", "n_pairs": 16, "pairs": "0" * 16, **task}}


def legend_of(figures, graph, task, unit="(logit difference)", tmp_path=None):
    circuit_plot.circuit_figure(graph, None, tmp_path / "c.png", "a circuit", unit, task)
    legend = figures[-1].legends[0]
    labels = {handle.get_color(): text.get_text().replace("\n", " ")
              for handle, text in zip(legend.legend_handles, legend.get_texts()) if hasattr(handle, "get_color")}
    return labels, legend.get_title().get_text().replace("\n", " ")


# ---- the method, named ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", [*GRADIENT_METHODS, "exact"])
def test_the_page_and_the_plot_name_a_score_methods_recorded_method(method, figures, tmp_path):
    document = with_task(method=method, score_unit=LOGIT_UNIT)
    text = page_text(document)
    sentence = re.search(r"Scores are .*?\.(?= |$)", text).group(0)
    assert f"method {method}," in sentence and "noising form" in sentence
    assert sentence.endswith("in logit difference.")
    labels, title = legend_of(figures, files.from_document(document, "the graph"), document["task"],
                              tmp_path=tmp_path)
    assert title == sentence  # one set of words for both
    if method == "exact":
        assert "exactly" in sentence and "estimated" not in sentence
    else:
        assert "estimated" in sentence and "exact" not in sentence


def test_a_file_that_records_no_method_keeps_the_general_words(figures, tmp_path):
    path = EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"  # EAP-IG's own: no "task"
    general = ("Scores are EAP-IG's noising form: the change in the metric when that edge alone is corrupted "
               "(estimated; exact for the exact method).")
    text = page_text(path)
    assert general in text and "method " not in text
    assert ("blue: score < 0, removing the edge lowers the metric; red: score > 0, removing the edge raises the "
            "metric") in text
    labels, title = legend_of(figures, files.load_graph(path), None, tmp_path=tmp_path)
    assert title == general and "needs" not in " ".join(labels.values())


# ---- the colours, worded for the unit -----------------------------------------------------------------------------

KL_RED = "red: score > 0, removing the edge raises the KL divergence from the clean run: an edge the circuit needs"
KL_BLUE = "blue: score < 0, removing the edge lowers the KL divergence from the clean run"
LOGIT_BLUE = "blue: score < 0, removing the edge lowers the logit difference: an edge the circuit needs"
LOGIT_RED = "red: score > 0, removing the edge raises the logit difference"


def test_a_kl_acdc_file_says_red_is_needed_and_every_edge_of_its_circuit_is_red(found, figures, tmp_path):
    """ACDC with --kl keeps an edge only when removing it raises the KL from the clean run by the threshold or more:
    every edge of its circuit scores > 0, so the colour they are all drawn in must be the one the words call needed."""
    path = found / "acdc-kl.json"
    graph, extras = files.read_file(path)
    assert extras["task"]["method"] == "acdc" and extras["task"]["score_unit"] == KL_UNIT
    text = page_text(path)
    assert f"{KL_BLUE}; {KL_RED}" in text and "the metric" not in text
    assert ("Scores are ACDC's (method acdc, with --kl): the change in the KL divergence from the clean run, "
            "KL(circuit without the edge) - KL(circuit), when ACDC visited the edge; an edge into a node that no "
            "longer reaches the logits scores 0 exactly, without a forward pass; in nats.") in text
    labels, title = legend_of(figures, graph, extras["task"], "nats (KL)", tmp_path)
    assert title in text
    assert labels[circuit_plot.POSITIVE] == KL_RED and labels[circuit_plot.NEGATIVE] == KL_BLUE
    (lines,) = [c for c in figures[-1].axes[0].collections if c.get_gid() == "edges"]
    assert len(lines.get_colors()) == graph.n_edges_in_graph > 0
    red_rgb = circuit_plot._rgb(circuit_plot.POSITIVE)
    assert all(tuple(c[:3]) == red_rgb for c in lines.get_colors())  # all drawn in the colour called needed


def test_a_logit_difference_file_says_blue_is_needed(found, figures, tmp_path):
    path = found / "clean-corrupted.json"
    graph, extras = files.read_file(path)
    text = page_text(path)
    assert f"{LOGIT_BLUE}; {LOGIT_RED}" in text
    assert "Scores are by method clean-corrupted, estimated from the clean and the corrupted run's gradients" in text
    labels, title = legend_of(figures, graph, extras["task"], tmp_path=tmp_path)
    assert labels[circuit_plot.NEGATIVE] == LOGIT_BLUE and labels[circuit_plot.POSITIVE] == LOGIT_RED
    assert title in text


def test_an_acdc_file_in_metric_mode_says_what_acdc_measured():
    from minineo.views.circuit import score_key

    key = score_key({"name": "ioi", "n_pairs": 4, "pairs": "x", "method": "acdc", "score_unit": LOGIT_UNIT})
    assert key.sentence == ("Scores are ACDC's (method acdc): the change in the metric, m(circuit without the edge) - "
                            "m(circuit), when ACDC visited the edge; an edge into a node that no longer reaches the "
                            "logits scores 0 exactly, without a forward pass; in logit difference.")
    assert (key.negative, key.positive) == (LOGIT_BLUE, LOGIT_RED)


def test_the_discover_plot_words_its_legend_from_the_run(tmp_path, figures):
    """Through the command: --plot of an ACDC --kl run (and of its file read back with --from) says red is needed."""
    for args in (["--method", "acdc", "--kl", "--out", str(tmp_path / "a.json")], ["--from", str(tmp_path / "a.json")]):
        result = runner.invoke(app, ["discover", "--model", "tiny-neo", "--task", "induction", "--n", "4", *args,
                                     "--plot", str(tmp_path / "a.png")])
        assert result.exit_code == 0, result.output
        legend = figures[-1].legends[0]
        assert KL_RED in [t.get_text().replace("\n", " ") for t in legend.get_texts()]
        assert legend.get_title().get_text().startswith("Scores are ACDC's (method acdc, with --kl)")


# ---- numbers that round to zero --------------------------------------------------------------------------------------

def test_a_value_that_rounds_to_zero_prints_as_zero_never_minus_zero():
    assert [circuit_plot.fixed(v) for v in (-0.0, -1e-5, -0.0004, 0.0004, -0.0006, 0.5)] == \
        ["0.000", "0.000", "0.000", "0.000", "-0.001", "0.500"]
    assert [circuit_plot.fixed(v, signed=True) for v in (-0.0, -1e-5, 2.0, -0.25)] == \
        ["+0.000", "+0.000", "+2.000", "-0.250"]


def test_the_faithfulness_table_never_prints_minus_zero():
    from rich.console import Console

    fractions = [0.001, 0.01, 0.1, 1.0]
    curve = FaithfulnessCurve(fractions, [0, 1, 11, 110], [0, 1, 11, 110], [0.0] * 4, [-0.0, -2e-5, 0.4, 1.0],
                              1.0, 0.0, True)
    console = Console(width=100, record=True)
    console.print(curve_table(curve, curve, "a curve"))
    text = console.export_text()
    assert "-0.000" not in text and text.count("0.000") >= 2 and "0.400" in text
