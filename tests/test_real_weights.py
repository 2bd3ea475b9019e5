"""Real hub weights, wherever they are cached: logits vs HF, and TransformerLens's published losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, cached_hub_model
from readme_blocks import examples, needs_gpt2, pages, run

PROMPTS = ["Hello world!", "The Eiffel Tower is in the city of", "When Mary and John went to the store, John gave a drink to"]
# Mean next-token loss on "Hello world!" with BOS, from TransformerLens's test suite.
PUBLISHED_LOSS = {"gpt2": 5.331855773925781, "EleutherAI/gpt-neo-125M": 4.900552272796631}


@pytest.mark.parametrize("name", list(PUBLISHED_LOSS))
def test_real_weights_loss_matches_published_value(name):
    model = cached_hub_model(name)
    tokens = model.to_tokens("Hello world!")
    logits = model(tokens)
    loss = F.cross_entropy(logits[0, :-1], tokens[0, 1:])
    assert abs(loss.item() - PUBLISHED_LOSS[name]) < 1e-4


@pytest.mark.parametrize("name", list(PUBLISHED_LOSS))
def test_real_weights_logits_match_hf(name):
    from transformers import AutoModelForCausalLM

    model = cached_hub_model(name)
    hf = AutoModelForCausalLM.from_pretrained(model.source, attn_implementation="eager").eval()
    for prompt in PROMPTS:
        tokens = model.to_tokens(prompt)
        with torch.no_grad():
            expected = hf(tokens).logits
        assert_close(model(tokens), expected, f"{name} fast path on {prompt!r}")
        assert_close(model.run_with_cache(tokens)[0], expected, f"{name} explicit on {prompt!r}")


def test_embedding_geometry_gpt_neo_shares_a_large_offset():
    from minineo import analysis

    geometry = analysis.embedding_geometry(cached_hub_model("EleutherAI/gpt-neo-125M").W_E)
    assert 0.93 < geometry.mean_cosine < 0.99
    assert 10.5 < geometry.mean_norm < 12.5 and 10 < geometry.mean_vector_norm < 12
    assert abs(geometry.mean_cosine_centred) < 0.01


def test_embedding_geometry_gpt2_small_is_spread_out():
    from minineo import analysis

    geometry = analysis.embedding_geometry(cached_hub_model("gpt2").W_E)
    assert 0.18 < geometry.mean_cosine < 0.28
    assert abs(geometry.mean_cosine_centred) < 0.01


def test_ioi_name_movers_rank_high_on_gpt2():
    from minineo import analysis

    model = cached_hub_model("gpt2")
    data = analysis.ioi_dataset(model, n=40, seed=0)
    result = analysis.ioi_analysis(model, data, ablation=False)
    assert result.logit_diff > 2.0 and result.accuracy > 0.9
    top = result.head_dla.flatten().argsort(descending=True)[:8].tolist()
    ranked = {divmod(i, model.config.n_heads) for i in top}
    assert {(9, 9), (9, 6), (10, 0)} <= ranked, ranked


@pytest.mark.parametrize("where, code", [(e.where, e.code) for page in pages() for e in examples(page)
                                         if e.kind == "python" and needs_gpt2(e.code)])
def test_docs_python_blocks_that_need_gpt2_run_as_written(where, code, monkeypatch):
    """The `# needs gpt2` blocks of README.md and docs/*.md (each self-contained), where gpt2 is cached;
    minineo.load("gpt2") finds it in the cache the model was found in."""
    model = cached_hub_model("gpt2")  # skips, saying why, where gpt2 is not cached
    cache_dir = Path(model.source).parents[2]  # .../models--gpt2/snapshots/<hash> -> the cache folder
    monkeypatch.setenv("MININEO_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run(code, {"__name__": "docs"}, where)
