"""An SAE on a per-head input site (blocks.L.q_input: (batch, pos, head, d_model) activations): sae_metrics and
`minineo sae-eval` read it as splicing does (the SAE applied to each head's vector), every figure equal to one
computed here by hand with patch= and Model.loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import analysis
from minineo.cli import app

SAE_FOLDER = Path(__file__).parent / "data" / "saelens_package" / "run_evals" / "sae"  # d_in 128 = tiny-neo's d_model


@pytest.fixture
def head_sae(tmp_path):
    folder = tmp_path / "q_input_sae"
    shutil.copytree(SAE_FOLDER, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.1.hook_q_input"  # TransformerLens's name of the site
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_sae_metrics_on_a_per_head_site_equal_splicing(head_sae):
    model, sae = minineo.load(), minineo.sae.load(head_sae)
    tokens = model.to_tokens(["When Mary and John went to the store, John gave a drink to Mary",
                              "Beautiful is better than ugly."])
    mask = tokens.attention_mask
    got = analysis.sae_metrics(model, sae, tokens)
    site = "blocks.1.q_input"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=[site])
        x = cache[site][mask.bool()]  # (real tokens, head, d_model)
        f = sae.encode(x)  # (real tokens, head, d_sae): one SAE input per head
        x_hat = sae.reconstruct(x)

        def loss(patch):
            return float(model.loss(tokens, patch=patch))

        assert got.clean_loss == pytest.approx(loss(None), abs=1e-5)
        assert got.spliced_loss == pytest.approx(loss({site: sae.reconstruct}), abs=1e-5)
        assert got.zero_ablated_loss == pytest.approx(loss({site: torch.zeros_like}), abs=1e-5)
        mean = x.mean(0)  # each head's own mean (head, d_model)
        assert got.mean_ablated_loss == pytest.approx(loss({site: lambda v: mean.expand_as(v).clone()}), abs=1e-5)
    assert got.l0 == pytest.approx(float((f != 0).sum(-1).float().mean()), abs=1e-6)
    flat, flat_hat = x.flatten(1).double(), x_hat.flatten(1).double()
    r2 = 1 - (flat - flat_hat).pow(2).sum(-1).mean() / (flat - flat.mean(0)).pow(2).sum(-1).mean()
    assert got.explained_variance == pytest.approx(float(r2), abs=1e-5)
    assert got.dead_features == int(((f != 0).flatten(0, 1).sum(0) == 0).sum())
    assert got.n_tokens == int(mask.sum()) and got.site == site


def test_sae_eval_runs_on_a_per_head_site(head_sae, tmp_path):
    pytest.importorskip("datasets", reason="sae-eval reads a corpus with pip install 'minineo[harvest]'")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("When Mary and John went to the store, John gave a drink to Mary\n" * 30)
    for flag in ("", "--exclude-special-tokens"):  # every token counts by default
        result = CliRunner().invoke(app, ["sae-eval", str(head_sae), str(corpus), "--context", "64", "--max-tokens",
                                          "256", "--json", str(tmp_path / "m.json"), *([flag] if flag else [])])
        assert result.exit_code == 0, result.output
        figures = json.loads((tmp_path / "m.json").read_text())
        model = minineo.load()
        rows = torch.stack(list(minineo.corpus.pack_rows(model, minineo.corpus.read_documents(corpus), 64))[:4])
        expected = analysis.sae_metrics(model, minineo.sae.load(head_sae), rows,
                                        exclude_special_tokens=flag == "--exclude-special-tokens")
        assert figures["spliced_loss"] == pytest.approx(expected.spliced_loss, rel=1e-6)
        assert figures["l0"] == pytest.approx(expected.l0, rel=1e-6)
        assert figures["excluded_token_ids"] == ([256] if flag == "--exclude-special-tokens" else [])
