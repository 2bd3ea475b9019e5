"""The sixth newcomer pass's findings on the command line's edges, each against the behaviour it should have: a
corpus that is not JSON is one error line (no log line of the datasets library before it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch


def test_a_corpus_that_is_not_json_is_one_error_line_and_nothing_else(tmp_path):
    pytest.importorskip("datasets", reason="eval reads a corpus with pip install 'minineo[harvest]'")
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("not json\n")
    done = subprocess.run([sys.executable, "-m", "minineo", "eval", str(corpus)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines[0].startswith("error: could not read the corpus") and "Failed to load JSON" not in done.stderr, lines


@pytest.mark.parametrize("command", ["patch", "path-patch"])
def test_the_patching_pages_say_which_tokens_the_logit_difference_compares(tmp_path, command):
    """' Mary' and ' John' are several tokens for the shipped byte-level models: the page says the tokens compared
    (M vs J), as the command's own line does, not only the answers."""
    from typer.testing import CliRunner

    from minineo.cli import app

    page = tmp_path / "p.html"
    result = CliRunner().invoke(app, [command, "When Mary and John went to the store, John gave a drink to",
                                      "When Mary and John went to the store, Mary gave a drink to", "--answer", " Mary",
                                      "--wrong", " John", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "compared on M vs J, their first differing tokens" in page.read_text()


def test_cache_norms_all_show_four_significant_digits():
    """`minineo cache` printed 53 beside 4.684: every norm now keeps 4 significant digits (53.00)."""
    import re

    from typer.testing import CliRunner

    from minineo.cli import app

    result = CliRunner().invoke(app, ["cache", "Hello world"])
    assert result.exit_code == 0, result.output
    norms = re.findall(r"│\s+([0-9.e+-]+)(?: \(finite entries\))? │\s*$", result.output, flags=re.M)
    assert len(norms) > 10
    for norm in norms:
        mantissa = norm.split("e")[0].replace(".", "").lstrip("0") or "0"
        assert len(mantissa) == 4, norm


def test_the_tuned_lens_of_a_batch_is_refused_as_the_logit_lens_is():
    import minineo
    from minineo.analysis.tuned_lens import TunedLens, apply_tuned_lens
    from minineo.errors import UserError

    model = minineo.load("tiny-neo")
    lens = TunedLens(model)  # the identity tuned lens: a batch was read as its row 0, silently
    with pytest.raises(UserError, match=r"a lens reads one prompt"):
        apply_tuned_lens(lens, model.to_tokens(["Hi", "Hello there"]))
    one = apply_tuned_lens(lens, model.to_tokens("Hello there"))
    assert one.logits.shape[1] == model.to_tokens("Hello there").shape[1]


def test_pairs_iterate_as_batches_of_one_and_stop():
    import minineo
    from minineo.discovery import ioi_pairs

    pairs = ioi_pairs(minineo.load("tiny-neo"), 3)
    rows = list(pairs)
    assert len(rows) == 3 and all(len(row) == 1 for row in rows)
    for i, row in enumerate(rows):
        assert bool((row.clean == pairs.clean[i:i + 1]).all()) and int(row.answer) == int(pairs.answer[i])


def test_a_threshold_whose_edges_pruning_removes_is_warned():
    """apply_threshold(absolute=False) kept 6 edges on tiny-neo's IOI, pruning removed all: said, as apply_greedy and
    apply_nodes say it. An empty circuit's faithfulness is 0 by construction."""
    import minineo
    from minineo import report
    from minineo.discovery import Graph, apply_threshold, attribute, ioi_pairs

    model = minineo.load("tiny-neo")
    pairs = ioi_pairs(model, 3)
    graph = attribute(model, Graph.from_model(model), pairs, method="eap")
    kept = int(((graph.scores >= 0.5) & graph.real_edges).sum())
    with report.collect() as said:
        circuit = apply_threshold(graph.copy(), 0.5, absolute=False)
    assert kept > 0 and circuit.n_edges_in_graph == 0  # the case: kept some, pruned to none
    assert len(said) == 1 and "pruning removed them all" in said[0], said
    with report.collect() as said:
        assert apply_threshold(graph.copy(), 0.0).n_edges_in_graph > 0
    assert said == []


def test_run_from_a_cached_residual_of_a_padded_batch_uses_that_runs_mask():
    """run_from(L, cache[resid_pre]) of a left-padded batch equals the forward for the padded row too (it was 0.61
    off: the mask did not travel); an explicit mask still wins, and a slice drops the carried one (documented)."""
    import minineo

    model = minineo.load("tiny-neo")
    tokens = model.to_tokens(["Hi", "When Mary and John went"])
    full, cache = model.run_with_cache(tokens)
    resid = cache["blocks.1.resid_pre"]
    assert torch.equal(resid.attention_mask, tokens.attention_mask)
    assert float((model.run_from(1, resid) - full)[tokens.attention_mask.bool()].abs().max()) < 1e-5
    explicit = model.run_from(1, resid, attention_mask=tokens.attention_mask)
    assert torch.equal(explicit, model.run_from(1, resid))
    unpadded, plain = model.run_with_cache(model.to_tokens("When Mary"))
    assert not hasattr(plain["blocks.1.resid_pre"], "attention_mask")


def test_a_harvest_folder_of_another_model_says_so_in_words(tmp_path):
    pytest.importorskip("datasets", reason="harvest reads a corpus with pip install 'minineo[harvest]'")
    from typer.testing import CliRunner

    from minineo.cli import app

    corpus = tmp_path / "c.txt"
    corpus.write_text("When Mary and John went to the store, John gave a drink to Mary\n" * 40)
    args = ["harvest", str(corpus), "--names", "blocks.1.resid_post", "--out", str(tmp_path / "acts"), "--context",
            "32", "--max-tokens", "256"]
    assert CliRunner().invoke(app, [*args, "--model", "tiny-neo"]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "--model", "tiny-gpt2"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "model: another model's config or weights" in text and "harvested from a different model" in text, text
