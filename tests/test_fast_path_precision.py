"""The fast path is as exact as HF's float32: both measured against a float64 run of the same weights.

The oracle is HF in float64 (eager attention). Per model, over a fixed sample of token batches, the fast
path's logit error (max and RMS over every logit) is compared with HF float32's own error on the same
batches. One batch's maximum is one logit's round-off and flips either way between batches (measured on
tiny-gpt2: fast/HF max-error ratios from 0.5 to 2.1 on single batches, RMS ratios 0.97..1.06 over samples;
no fused step is systematically less exact), so the check pools a sample and allows the spread that two
float32 orderings of the same sums show: far below what a real precision bug costs (the test with the
erf GELU in place of the tanh one shows the margin). The explicit path runs HF's own float32 operations,
so its error is HF's, exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import minineo
from minineo.checkpoints.hub import EMBEDDED

MAX_RATIO, RMS_RATIO = 1.5, 1.15  # fast path's error / HF float32's, pooled over the sample


def _sample(d_vocab: int) -> list[torch.Tensor]:
    """Six batches of 4 x 128 tokens: text of the zoo's kind and uniform random ids (sharp, varied attention)."""
    g = torch.Generator().manual_seed(11)
    return [torch.randint(0, d_vocab, (4, 128), generator=g) for _ in range(6)]


def _errors(run, hf64, batches) -> tuple[float, float]:
    """(max, RMS) over every logit of `run(tokens)` against HF float64's logits."""
    worst, squares = 0.0, 0.0
    with torch.no_grad():
        for tokens in batches:
            diff = (run(tokens).double() - hf64(tokens).logits).abs()
            worst, squares = max(worst, float(diff.max())), squares + float(diff.pow(2).mean())
    return worst, (squares / len(batches)) ** 0.5


def _models(request, tmp_path):
    """(HF float32, HF float64, minineo) for a zoo model or a random HF model saved to disk."""
    name = request.param
    if name in EMBEDDED:
        hf = AutoModelForCausalLM.from_pretrained(EMBEDDED[name], attn_implementation="eager").eval()
        model = minineo.load(name)
    else:
        from hf_oracle import build_hf, hf_config, save_hf

        hf = build_hf(hf_config(name, layers=3, heads=4, d_head=16, vocab=257, n_ctx=128, window=5), seed=1,
                      weight_scale=3.0)
        model = minineo.load(save_hf(hf, tmp_path / name))
    return hf, copy.deepcopy(hf).double(), model


@pytest.fixture(params=sorted(EMBEDDED) + ["gpt2", "gpt_neo"])
def models(request, tmp_path):
    return _models(request, tmp_path)


def test_fast_path_is_as_exact_as_hf_float32(models):
    hf, hf64, model = models
    batches = _sample(model.config.d_vocab)
    hf_max, hf_rms = _errors(lambda t: hf(t).logits, hf64, batches)
    fast_max, fast_rms = _errors(model, hf64, batches)
    assert fast_max <= MAX_RATIO * hf_max, f"fast path max error {fast_max:.3g} vs HF float32's {hf_max:.3g}"
    assert fast_rms <= RMS_RATIO * hf_rms, f"fast path RMS error {fast_rms:.3g} vs HF float32's {hf_rms:.3g}"
    explicit = _errors(lambda t: model(t, explicit=True), hf64, batches)
    assert explicit == (hf_max, hf_rms)  # the explicit path is HF's float32 computation, bit for bit


@pytest.mark.parametrize("name", ["tiny-gpt2"])
def test_the_precision_check_catches_a_wrong_gelu(name):
    """The erf GELU in place of GPT-2's tanh one (a plausible bug, ~1e-3 in the logits) fails the check."""
    hf = AutoModelForCausalLM.from_pretrained(EMBEDDED[name], attn_implementation="eager").eval()
    model = minineo.load(name)
    for block in model.blocks:
        block.mlp.fused_act = F.gelu
    batches = _sample(model.config.d_vocab)[:2]
    hf64 = copy.deepcopy(hf).double()
    hf_max, hf_rms = _errors(lambda t: hf(t).logits, hf64, batches)
    wrong_max, wrong_rms = _errors(model, hf64, batches)
    assert wrong_max > 10 * MAX_RATIO * hf_max and wrong_rms > 10 * RMS_RATIO * hf_rms
