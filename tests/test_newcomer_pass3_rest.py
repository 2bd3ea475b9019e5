"""The rest of the third newcomer pass's findings, each against the behaviour it should have: a patch that puts NaN
into a site is refused (a -inf attention score, which blocks a position, is not); a JSONL of pairs names the file and
line of a bad pair and says which keys of its rows it does not read; `view-circuit --name` that contradicts the
file's model says so."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import report
from minineo.cli import app
from minineo.discovery import Pairs
from minineo.errors import UserError

RUNNER = CliRunner()
EAP_FILE = "tests/data/eap_ig/eap-ig-tiny-gpt2-ioi16-eap-top20.json"


@pytest.fixture(scope="module")
def model():
    return minineo.load("tiny-gpt2")


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens("When Mary and John went to the store, John gave a drink to")


def nan_at(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[..., 0] = float("nan")
    return y


@pytest.mark.parametrize("call", ["forward", "run_with_cache", "loss", "run_from"])
def test_a_patch_function_that_puts_nan_into_a_site_is_refused_naming_it(model, tokens, call):
    patch = {"blocks.0.attn.z": nan_at}
    site = "blocks.1.mlp_out" if call == "run_from" else "blocks.0.attn.z"
    with pytest.raises(UserError, match=rf"patch function for '{site}' put NaN or infinite values into the site"):
        if call == "forward":
            model(tokens, patch=patch)
        elif call == "run_with_cache":
            model.run_with_cache(tokens, patch=patch)
        elif call == "loss":
            model.loss(tokens, patch=patch)
        else:
            _, cache = model.run_with_cache(tokens, names=["blocks.1.resid_pre"])
            model.run_from(1, cache["blocks.1.resid_pre"], patch={"blocks.1.mlp_out": nan_at})


def test_a_patch_tensor_with_nan_is_refused_and_finite_patches_still_work(model, tokens):
    _, cache = model.run_with_cache(tokens, names=["blocks.1.resid_pre"])
    site = cache["blocks.1.resid_pre"]
    with pytest.raises(UserError, match=r"patch tensor for 'blocks.1.resid_pre' put NaN or infinite values"):
        model(tokens, patch={"blocks.1.resid_pre": nan_at(site)})
    patched = model(tokens, patch={"blocks.1.resid_pre": site * 0})
    assert torch.isfinite(patched).all()


def test_minus_infinity_in_attention_scores_blocks_a_position_and_is_not_refused(model, tokens):
    """Setting a score to -inf is the standard way to stop a head attending to a position (the causal mask does it):
    not a NaN the patch introduced. The result equals the pattern with that position's weight removed."""
    def block_first(scores):  # (batch, head, query, key)
        scores = scores.clone()
        scores[..., 1:, 0] = float("-inf")
        return scores

    logits, cache = model.run_with_cache(tokens, patch={"blocks.0.attn.scores": block_first},
                                         names=["blocks.0.attn.pattern"])
    assert torch.isfinite(logits).all()
    assert float(cache["blocks.0.attn.pattern"][0, :, 1:, 0].abs().max()) == 0.0


def test_a_jsonl_pair_of_unequal_lengths_or_a_multi_token_answer_names_its_file_and_line(model, tmp_path):
    good = {"clean": "When Mary and John went to the store, John gave a drink to",
            "corrupted": "When Mary and John went to the store, Mary gave a drink to", "answer": "M", "wrong": "J"}
    path = tmp_path / "pairs.jsonl"
    uneven = {**good, "corrupted": good["corrupted"] + " and then"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(uneven) + "\n")  # the bad pair is on line 3
    with pytest.raises(UserError, match=r"pairs.jsonl, line 3: the clean prompt is \d+ tokens and the corrupted one"):
        Pairs.from_jsonl(model, path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": "Ma"}) + "\n")
    with pytest.raises(UserError, match=r"pairs.jsonl, line 2: the answer 'Ma' is 2 tokens"):
        Pairs.from_jsonl(model, path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "wrong": "M"}) + "\n")
    with pytest.raises(UserError, match=r"pairs.jsonl, line 2: the answer and the wrong answer are the same token"):
        Pairs.from_jsonl(model, path)


def test_keys_a_pairs_file_does_not_read_are_named_and_the_pairs_still_read(model, tmp_path):
    row = {"clean": "When Mary and John went to the store, John gave a drink to",
           "corrupted": "When Mary and John went to the store, Mary gave a drink to", "answer": "M", "wrong": "J"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "label": 1, "wrong_answer": "x"}) + "\n")
    with report.collect() as said:
        pairs = Pairs.from_jsonl(model, path)
    assert len(pairs) == 2
    assert len(said) == 1 and "'label' (first on line 2)" in said[0] and "'wrong_answer'" in said[0], said
    path.write_text(json.dumps(row) + "\n")
    with report.collect() as said:
        Pairs.from_jsonl(model, path)
    assert said == []


def test_view_circuit_name_that_contradicts_the_files_model_is_warned(tmp_path):
    graph = json.loads(open(EAP_FILE).read())
    graph["model"] = "tiny-gpt2"
    source = tmp_path / "g.json"
    source.write_text(json.dumps(graph))
    result = RUNNER.invoke(app, ["view-circuit", str(source), "--out", str(tmp_path / "c.html"), "--name", "gpt2"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "records 'tiny-gpt2'" in " ".join(result.output.split())
    result = RUNNER.invoke(app, ["view-circuit", str(source), "--out", str(tmp_path / "d.html"), "--name", "tiny-gpt2"])
    assert result.exit_code == 0 and "warning:" not in result.output, result.output


def test_an_empty_list_of_texts_is_named_as_such(model):
    with pytest.raises(UserError, match="texts is an empty list; give at least one text"):
        model.to_tokens([])


def test_equal_full_and_empty_given_by_the_caller_are_named_as_given(model):
    from minineo.discovery import Graph, faithfulness, ioi_pairs

    with pytest.raises(UserError, match=r"full=\+1.0000 and empty=\+1.0000 \(as given\) are equal"):
        faithfulness(model, Graph.from_model(model), ioi_pairs(model, 4), full=1.0, empty=1.0)


@pytest.mark.parametrize("site, patch", [
    ("blocks.1.attn.z", lambda z: torch.full_like(z, -float("inf"))),
    ("blocks.0.attn.pattern", lambda p: p * 0 - float("inf")),
    ("blocks.0.resid_pre", lambda x: x + float("inf")),
    ("blocks.1.mlp_out", lambda x: x * float("inf")),
])
def test_a_patch_that_puts_infinities_into_a_site_and_makes_the_output_nan_is_refused(model, tokens, site, patch):
    """An infinity where the forward was finite: unlike a -inf score (which blocks a position), the output (logits)
    is no longer finite, so the patch is refused naming the site, as a NaN is."""
    assert torch.isfinite(model(tokens)).all()  # the unpatched forward is finite
    with pytest.raises(UserError, match=rf"patch function for '{site}' put NaN or infinite values into the site"):
        model(tokens, patch={site: patch})
    with pytest.raises(UserError, match=rf"patch function for '{site}' put NaN or infinite values"):
        model.run_with_cache(tokens, patch={site: patch})
