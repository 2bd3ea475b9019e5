"""The sixth newcomer pass, analyses: resample ablation never resamples a row from itself (a batch of 1 is
refused); `ablate`'s backup table names the method it used; head scores with nothing to measure are NaN and
shown as "–"; the logit lens refuses a batch; `ioi` marks the heads with no path to the name movers' queries
as path-patch does; `lens --tuned --plot` draws both lenses; signed changes, ␣ in the tuned-lens table, and
"top N of M" in `attribute`."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import analysis
from minineo.analysis.ablation import ablation_values, resample_sources
from minineo.cli import app, plots
from minineo.errors import UserError

runner = CliRunner()
C = "When Mary and John went to the store, John gave a drink to"
ANSWERS = ["--answer", " Mary", "--wrong", " John"]


@pytest.fixture(scope="module")
def m():
    return minineo.load()



def batch(m, n):
    texts = ["When Mary and John went to the store, John gave a drink to", "The cat sat on the mat and then",
             "After Tom and Anna met at the park, Tom passed a book to", "One two three four five six",
             "A B C D E F G", "Hello there, my old friend"][:n]
    return m.to_tokens(texts)


# --- 1. resample: a derangement; a batch of 1 refused ------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_resample_sources_are_a_permutation_with_no_fixed_point(n):
    for seed in range(20):
        sources = resample_sources(n, seed)
        assert sorted(sources.tolist()) == list(range(n))
        assert (sources != torch.arange(n)).all(), (n, seed, sources)


def test_resample_ablation_reads_each_row_from_another_row_and_matches_brute_force(m):
    tokens = batch(m, 4)
    mask = tokens.attention_mask
    values = ablation_values(m, tokens, [1], "resample", attention_mask=mask, seed=0)[1]
    _, cache = m.run_with_cache(tokens, names=["blocks.1.attn.z"], attention_mask=mask)
    z = cache["blocks.1.attn.z"]
    sources = resample_sources(4, 0)
    for row in range(4):  # every row's values are another row's z (the rows differ: no row is its own source)
        assert not torch.allclose(values[row], z[row])
    # brute force: row i's head 1.1 z replaced by the z of sources[i], from a separate run on those rows
    _, ref_cache = m.run_with_cache(tokens[sources], names=["blocks.1.attn.z"], attention_mask=mask[sources])
    reference = ref_cache["blocks.1.attn.z"]

    def patch(zz):
        zz = zz.clone()
        zz[:, :, 1] = reference[:, :, 1]
        return zz

    expected = m(tokens, patch={"blocks.1.attn.z": patch}, attention_mask=mask)
    got = analysis.ablate_heads(m, tokens, [(1, 1)], "resample", attention_mask=mask)
    clean = m(tokens, attention_mask=mask)
    torch.testing.assert_close(got, expected)
    for row in range(4):  # every row ablated (the old randperm(4, seed 0) left rows 0 and 1 unchanged)
        assert not torch.allclose(got[row, -1], clean[row, -1])


def test_resample_of_one_prompt_is_refused(m):
    tokens = m.to_tokens(C)
    with pytest.raises(UserError, match="at least 2 prompts"):
        analysis.ablate_heads(m, tokens, [(1, 1)], method="resample")
    with pytest.raises(UserError, match="at least 2 prompts"):
        analysis.head_ablation_effects(m, tokens, lambda lg: lg[0, -1, 0], method="resample")


def test_cli_ablate_resample_is_refused_and_the_backup_table_names_its_method():
    result = runner.invoke(app, ["ablate", C, *ANSWERS, "--method", "resample", "--heads", "1.1"])
    assert result.exit_code != 0 and "nothing to resample from" in result.output
    result = runner.invoke(app, ["ablate", C, *ANSWERS, "--method", "mean"])
    assert result.exit_code == 0, result.output
    assert "top 3 heads by DLA" in " ".join(result.output.split()) and "mean-ablated" in result.output
    # 7: the change column is signed: every number in it has its sign
    rows = [line for line in result.output.splitlines() if line.startswith("│ L")]
    changes = [line.split("│")[2].strip() for line in rows[:8]]
    assert changes and all(c[0] in "+-" for c in changes), changes


# --- 3. head scores: NaN with nothing to measure; an empty prompt is BOS alone -----------------------------------

def test_head_scores_without_a_repeated_token_are_nan(m):
    scores = analysis.head_scores(m, m.to_tokens("xyzw"))
    assert scores.induction.isnan().all() and scores.duplicate_token.isnan().all()
    assert not scores.previous_token.isnan().any()
    # a repeated token makes them numbers again, each a probability mass in [0, 1]
    repeated = analysis.head_scores(m, m.to_tokens("xyzxyz"))
    for s in (repeated.induction, repeated.duplicate_token):
        assert not s.isnan().any() and (s >= 0).all() and (s <= 1 + 1e-6).all()


def test_cli_heads_prints_a_dash_and_a_note_and_scores_an_empty_prompt_as_bos(tmp_path, figures):
    result = runner.invoke(app, ["heads", "--seq-len", "5", "--n-seqs", "2", "--prompt", "xyzw"])
    assert result.exit_code == 0, result.output
    prompt_part = result.output.split("on 'xyzw'")[1]
    assert "–" in prompt_part and "no repeated token" in prompt_part
    result = runner.invoke(app, ["heads", "--seq-len", "5", "--n-seqs", "2", "--prompt", "", "--plot",
                                 str(tmp_path / "h.png")])
    assert result.exit_code == 0, result.output
    assert "the prompt is empty" in result.output and "heads by induction score on ''" in result.output
    # the plot: the prompt's panels are hatched, with a legend, not a colour of the scale
    fig = figures[-1]
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("not scored" in t for t in legends)


# --- 4. the logit lens reads one prompt ---------------------------------------------------------------------------

def test_logit_lens_refuses_a_batch_and_still_reads_one_row(m):
    with pytest.raises(UserError, match=r"\[i:i \+ 1\]"):
        analysis.logit_lens(m, m.to_tokens(["Hi", "Hello there"]))
    one = analysis.logit_lens(m, m.to_tokens("Hello there"))
    assert one.top_tokens.shape == (m.config.n_layers + 1, m.to_tokens("Hello there").shape[1])


# --- 5. ioi: no path to the name movers' queries is "–" and hatched ----------------------------------------------

def test_ioi_marks_heads_with_no_path_to_the_name_movers(tmp_path, figures):
    result = runner.invoke(app, ["ioi", "--n", "4", "--model", "tiny-gpt2", "--no-ablation", "--plot",
                                 str(tmp_path / "ioi.png")])
    assert result.exit_code == 0, result.output
    assert "no path to the name movers' queries" in result.output
    header = [line for line in result.output.splitlines() if "queries" in line]
    assert header
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith("│ L1")]
    queries = 3  # head, DLA, path -> logits, path -> queries
    assert rows and all(r[queries + 1].strip() == "–" for r in rows), rows  # layer 1 (the last) has no later receiver
    fig = figures[-1]
    panel = next(ax for ax in fig.axes if ax.get_title().endswith("queries"))
    assert [t.get_text() for t in panel.get_legend().get_texts()] == [plots.UNSCORED_LABEL]
    data = panel.images[0].get_array()
    assert data.mask[1:].all() and not data.mask[0].any()  # layer 1 masked (drawn grey), layer 0 scored


# --- 6 and 7. lens --tuned: both lenses in the plot, ␣ in the table -----------------------------------------------

def test_lens_tuned_plot_has_both_panels_and_the_table_shows_spaces(tmp_path, figures):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["When Mary and John went to the store, John gave a drink to Mary.",
                                 "The cat sat on the mat and looked at the dog for a while."] * 12))
    lens_dir = tmp_path / "lens"
    made = runner.invoke(app, ["tune-lens", str(corpus), "--out", str(lens_dir), "--steps", "2", "--batch-size", "2",
                               "--context", "64"])
    assert made.exit_code == 0, made.output
    figures.clear()
    result = runner.invoke(app, ["lens", "When Mary and John", "--tuned", str(lens_dir), "--plot",
                                 str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    fig = figures[-1]
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["logit lens", "tuned lens"]
    comparison = result.output.split("logit lens vs tuned lens")[1]
    assert "' '" not in comparison and "␣" in comparison  # the final layer's top token after "John" is a space


def test_attribute_footer_says_top_n_of_all():
    result = runner.invoke(app, ["attribute", C, *ANSWERS, "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "the top 5 of 14" in " ".join(result.output.split())  # the footer may wrap
    full = runner.invoke(app, ["attribute", C, *ANSWERS, "--top", "20"])
    assert "the top" not in full.output
