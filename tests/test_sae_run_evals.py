"""analysis.sae_metrics against SAELens's own `run_evals` on the same tokens, SAE and model (tiny-neo): the default
convention equals run_evals(exclude_special_tokens=False), exclude_special_tokens=True equals its default (BOS
neither spliced nor counted). The numbers were written by tests/data/saelens_package/make_run_evals.py with the
real package (sae-lens 6.54.12, TransformerLens 3.9.0); minineo does not import it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

import minineo
from minineo import analysis
from minineo.errors import UserError

FIXTURE = Path(__file__).parent / "data" / "saelens_package" / "run_evals"
SAELENS = json.loads((FIXTURE / "metrics.json").read_text())
PAIRS = {"clean_loss": "ce_loss_without_sae", "spliced_loss": "ce_loss_with_sae",
         "zero_ablated_loss": "ce_loss_with_ablation", "loss_recovered": "ce_loss_score", "l0": "l0",
         "explained_variance": "explained_variance"}


@pytest.fixture(scope="module")
def setup():
    return minineo.load(), minineo.sae.load(FIXTURE / "sae"), load_file(str(FIXTURE / "tokens.safetensors"))["tokens"]


@pytest.mark.parametrize("exclude", [False, True])
def test_sae_metrics_equal_saelens_run_evals(setup, exclude):
    model, sae, tokens = setup
    got = analysis.sae_metrics(model, sae, tokens, batch_size=3, exclude_special_tokens=exclude)
    expected = SAELENS[f"exclude_special_tokens={str(exclude).lower()}"]
    for ours, theirs in PAIRS.items():
        # float32 round-off between two implementations (TransformerLens's forward and minineo's)
        assert getattr(got, ours) == pytest.approx(expected[theirs], rel=2e-5, abs=1e-5), ours
    assert got.excluded_token_ids == ((256,) if exclude else ())
    assert got.n_tokens == tokens.numel() - (int((tokens == 256).sum()) if exclude else 0)


def test_the_two_conventions_differ_on_the_fixture():
    """Not a vacuous option: BOS's positions move every figure by more than the tolerance above."""
    a, b = SAELENS["exclude_special_tokens=true"], SAELENS["exclude_special_tokens=false"]
    for key in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "l0", "explained_variance"):
        assert abs(a[key] - b[key]) > 1e-3 * abs(b[key]), key


def test_an_explicit_list_of_ids_is_the_same_as_the_models_special_tokens(setup):
    model, sae, tokens = setup
    assert analysis.sae_metrics(model, sae, tokens, exclude_special_tokens=[256]) == \
        analysis.sae_metrics(model, sae, tokens, exclude_special_tokens=True)


@pytest.mark.parametrize("bad", [[], [257], [True], "bos", 1])
def test_a_bad_exclusion_is_a_user_error(setup, bad):
    model, sae, tokens = setup
    with pytest.raises(UserError, match="exclude_special_tokens"):
        analysis.sae_metrics(model, sae, tokens, exclude_special_tokens=bad)


def test_rows_of_only_special_tokens_leave_nothing_to_count(setup):
    model, sae, tokens = setup
    with pytest.raises(UserError, match="nothing|no prediction"):
        analysis.sae_metrics(model, sae, tokens[:, :1].repeat(1, 4), exclude_special_tokens=True)
