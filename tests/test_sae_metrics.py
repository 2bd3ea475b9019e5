"""analysis.sae_metrics and `minineo sae-eval`: every figure equals one computed here by hand with patch=
and F.cross_entropy, on an SAE written by sae-lens itself for the embedded tiny-neo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import minineo
from minineo import analysis
from minineo.cli import app

SAE_FOLDER = Path(__file__).parent / "data" / "saelens_package" / "tiny_neo_resid_post_1"
SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


def ce(logits, tokens, mask):
    """Mean next-token nats over predictions whose token and target are both real."""
    counted = (mask[:, 1:] * mask[:, :-1]).bool().flatten()
    nats = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return float(nats[counted].mean())


def test_every_figure_equals_the_hand_computed_one(tiny):
    sae = minineo.sae.load(SAE_FOLDER)
    tokens = tiny.to_tokens(["When Mary and John went to the store, John gave a drink to Mary",
                             "Beautiful is better than ugly.", "abcdefgh abcdefgh abcdefgh"])
    mask = tokens.attention_mask
    got = analysis.sae_metrics(tiny, sae, tokens, batch_size=2)  # two chunks: the sums must carry over
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tokens, names=[SITE])
        x = cache[SITE][mask.bool()]  # (real tokens, d_model)
        W, b = sae.W_enc, sae.b_enc
        hidden = (x - sae.b_dec) @ W + b  # apply_b_dec_to_input, no normalisation: the fixture's cfg
        top = hidden.topk(sae.k, dim=-1)
        f = torch.zeros_like(hidden).scatter(-1, top.indices, top.values.relu())
        x_hat = f @ sae.W_dec + sae.b_dec
        mean = x.mean(0)

        def splice(value):
            out = value.clone()
            out[mask.bool()] = x_hat
            return out  # pad positions keep their value: no real token reads them

        clean = ce(tiny(tokens, attention_mask=mask), tokens, mask)
        spliced = ce(tiny(tokens, attention_mask=mask, patch={SITE: splice}), tokens, mask)
        zero = ce(tiny(tokens, attention_mask=mask, patch={SITE: lambda v: v * 0}), tokens, mask)
        mean_ablated = ce(tiny(tokens, attention_mask=mask, patch={SITE: lambda v: mean.expand_as(v)}), tokens, mask)
    assert abs(got.clean_loss - clean) <= 1e-5
    assert abs(got.spliced_loss - spliced) <= 1e-5
    assert abs(got.zero_ablated_loss - zero) <= 1e-5
    assert abs(got.mean_ablated_loss - mean_ablated) <= 1e-5
    assert abs(got.loss_recovered - (zero - spliced) / (zero - clean)) <= 1e-5
    assert abs(got.l0 - float((f != 0).sum(-1).float().mean())) <= 1e-6
    assert got.dead_features == int(((f != 0).sum(0) == 0).sum())
    r2 = 1 - (x - x_hat).pow(2).sum(-1).mean() / (x - mean).pow(2).sum(-1).mean()
    assert abs(got.explained_variance - float(r2)) <= 1e-5
    assert got.n_tokens == int(mask.sum()) and got.site == SITE


def test_sae_eval_prints_the_figures_and_writes_json(tiny, tmp_path):
    pytest.importorskip("datasets", reason="sae-eval reads a corpus with pip install 'minineo[harvest]'")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("When Mary and John went to the store, John gave a drink to Mary\n" * 30)
    result = CliRunner().invoke(app, ["sae-eval", str(SAE_FOLDER), str(corpus), "--context", "64",
                                      "--max-tokens", "256", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "loss recovered" in result.output and "L0" in result.output
    figures = json.loads((tmp_path / "m.json").read_text())
    rows = torch.stack(list(minineo.corpus.pack_rows(tiny, minineo.corpus.read_documents(corpus), 64))[:4])
    expected = analysis.sae_metrics(tiny, minineo.sae.load(SAE_FOLDER), rows)
    for key, value in expected.to_dict().items():
        assert figures[key] == pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float) else figures[key] == value
    wrong = CliRunner().invoke(app, ["sae-eval", str(SAE_FOLDER), str(corpus), "--model", str(tmp_path)])
    assert wrong.exit_code == 1
