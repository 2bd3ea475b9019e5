"""head_ablation_effects, backup_heads and ioi_analysis (on the patching engine) against the brute-force
loop over full forward passes with `patch=`, on GPT-2 and GPT-Neo (local windows), padded batches."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close

from minineo import analysis, load
from minineo.analysis.ablation import ablation_patch
from minineo.analysis.attribution import dla_sites, head_logit_attribution


def brute_effects(model, tokens, metric, method, **kwargs):
    """One full forward pass per head, as head_ablation_effects did before the engine."""
    mask = kwargs.get("attention_mask")
    clean = float(metric(model(tokens, attention_mask=mask)))
    cfg = model.config
    effects = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            patch = ablation_patch(model, tokens, [(layer, head)], method, **kwargs)
            effects[layer, head] = float(metric(model(tokens, patch=patch, attention_mask=mask))) - clean
    return effects


def padded(n=3, pos=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 97, (n, pos), generator=g)
    mask = torch.ones(n, pos, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    mask[2, :1] = 0
    return tokens, mask


@pytest.fixture(params=["gpt2", "gpt_neo"])
def model(request, hf_pair):
    shape = dict(layers=3, heads=4, weight_scale=3.0) | ({"window": 3} if request.param == "gpt_neo" else {})
    return hf_pair(request.param, **shape)[1]


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_head_ablation_effects_equal_one_full_forward_per_head(model, method):
    tokens, mask = padded()
    metric = lambda logits: (logits[:, -1, 3] - logits[:, -1, 5]).mean()  # noqa: E731
    got = analysis.head_ablation_effects(model, tokens, metric, method, attention_mask=mask)
    want = brute_effects(model, tokens, metric, method, attention_mask=mask)
    assert_close(got, want, f"{method} ablation effects", atol=1e-5 * max(1.0, float(want.abs().max())))


def test_mean_ablation_from_a_reference_batch_equals_brute_force(model):
    tokens, mask = padded()
    reference, reference_mask = padded(4, 9, seed=1)
    metric = lambda logits: logits[:, -2:, 7].mean()  # noqa: E731
    kwargs = dict(attention_mask=mask, reference_tokens=reference, reference_mask=reference_mask)
    got = analysis.head_ablation_effects(model, tokens, metric, "mean", **kwargs)
    assert_close(got, brute_effects(model, tokens, metric, "mean", **kwargs), "mean ablation, reference batch")


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_backup_heads_equal_the_full_patched_run(model, method):
    tokens, mask = padded()
    got = analysis.backup_heads(model, tokens, answer=4, wrong=9, top=2, method=method, attention_mask=mask)
    patch = ablation_patch(model, tokens, got.ablated, method, attention_mask=mask)
    logits, cache = model.run_with_cache(tokens, names=dla_sites, patch=patch, attention_mask=mask)
    after = head_logit_attribution(model, cache, logits, 4, 9, -1)
    assert_close(got.direct_after, after, f"DLA after {method}-ablating {got.ablated}")
    growth = after - got.direct_before
    for layer, head in got.ablated:
        growth[layer, head] = float("-inf")
    assert [head for head, _ in got.backups] == [divmod(int(i), model.config.n_heads)
                                                 for i in growth.flatten().argsort(descending=True)[:5]]


def test_ioi_ablation_equals_brute_force_on_the_embedded_model():
    model = load()
    data = analysis.ioi_dataset(model, n=6, seed=0)
    result = analysis.ioi_analysis(model, data)
    metric = lambda logits: analysis.ioi.logit_diff(logits, data)  # noqa: E731
    want = brute_effects(model, data.tokens, metric, "mean", attention_mask=data.attention_mask,
                         reference_tokens=data.abc_tokens, reference_mask=data.abc_attention_mask)
    assert_close(result.head_ablation, want, "IOI mean-ablation effects")
