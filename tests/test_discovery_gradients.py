"""The gradient engine's closed forms against torch.autograd (float64, random inputs): the per-head q/k/v-input gradients
of minineo.discovery.gradients (ln1's backward in closed form, batched over heads) = autograd through F.layer_norm on one
copy of resid_pre per head, the way TransformerLens's split-input hooks build the graph. And EAP under a metric that
reads every position (so every position is unembedded, not only the last) = a float64 central finite difference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minineo.discovery import Graph, attribute
from minineo.discovery.gradients import RunGrads, head_input_grads, layer_norm_parts
from test_discovery_attribution import moved_metric, random_model
from test_discovery_patched import caches, random_pairs


def autograd_head_input_grads(model, layer: int, resid_pre: torch.Tensor, dq, dk, dv) -> torch.Tensor:
    """d (sum of dq . q + dk . k + dv . v) / d (each head's q, k, v input): (batch, pos, 3 * head, d_model), q heads,
    k heads, v heads, from autograd through the block's LayerNorm on a copy of resid_pre per head and letter."""
    attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
    H = model.config.n_heads
    x = resid_pre[:, :, None].repeat(1, 1, 3 * H, 1).requires_grad_()  # (batch, pos, 3 * head, d_model)
    y = F.layer_norm(x, (x.shape[-1],), ln1.w, ln1.b, ln1.eps)
    total = 0
    for i, (d, W, b) in enumerate(((dq, attn.W_Q, attn.b_Q), (dk, attn.W_K, attn.b_K), (dv, attn.W_V, attn.b_V))):
        out = torch.einsum("bphm,hme->bphe", y[:, :, i * H:(i + 1) * H], W) + b  # (batch, pos, head, d_head)
        total = total + (out * d).sum()
    (grad,) = torch.autograd.grad(total, x)
    return grad


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
@pytest.mark.parametrize("first", [0, 3])
def test_head_input_grads_equal_autograd_through_each_heads_layer_norm(arch, first):
    model = random_model(arch, seed=3, dtype=torch.float64, layers=2, heads=3, d_head=4)
    g = torch.Generator().manual_seed(7)
    for block in model.blocks:  # a LayerNorm weight far from 1, so that gamma's place in the formula matters
        block.ln1.w.data = torch.randn(block.ln1.w.shape, generator=g, dtype=torch.float64)
    batch, pos, H, d_head, d_model = 2, 5, 3, 4, 12
    runs, expected = [], 0
    for _ in range(2):  # two runs at different residuals: their gradients sum
        resid = 3 * torch.randn(batch, pos, d_model, generator=g, dtype=torch.float64) + 1
        qkv = tuple(torch.randn(batch, pos, H, d_head, generator=g, dtype=torch.float64) for _ in range(3))
        zeros = [torch.zeros(batch, pos, d_model, dtype=torch.float64)] * 2
        runs.append(RunGrads(qkv=[qkv, qkv], resid_pre=[resid, resid], mlp_in=zeros, resid_post=zeros[0]))
        expected = expected + autograd_head_input_grads(model, 1, resid, *qkv)
    moved = pos - first
    out = torch.empty(3 * H, moved * batch, d_model, dtype=torch.float64)
    head_input_grads(model, 1, runs, first, out, torch.empty_like(out))
    # out's rows are position-major: (3 * head, moved pos, batch, d_model)
    expected = expected[:, first:].permute(2, 1, 0, 3)
    assert torch.allclose(out.view(3 * H, moved, batch, d_model), expected, rtol=1e-10, atol=1e-12)


def test_layer_norm_parts_give_what_F_layer_norm_normalises_by():
    g = torch.Generator().manual_seed(0)
    x = 5 * torch.randn(3, 4, 16, generator=g, dtype=torch.float64) - 2
    normalized, inv_sigma = layer_norm_parts(x, 1e-5)
    assert torch.allclose(normalized, F.layer_norm(x, (16,), eps=1e-5).reshape(-1, 16), rtol=1e-12, atol=1e-12)
    assert torch.allclose(1 / inv_sigma, (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt().reshape(-1, 1))


def every_position_logit_diff(logits: torch.Tensor, pairs) -> torch.Tensor:
    """The sum over positions of logit[answer] - logit[wrong]: (n,), reading every position."""
    rows = torch.arange(len(pairs))
    return (logits[rows, :, pairs.answer] - logits[rows, :, pairs.wrong]).sum(-1)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_eap_under_a_metric_of_every_position_is_a_finite_difference(arch):
    model = random_model(arch, seed=11, dtype=torch.float64, layers=2, heads=2, d_head=8, window=3)
    pairs = random_pairs(5, 3, 7, padded=True)
    graph = attribute(model, Graph.from_model(model), pairs, every_position_logit_diff, method="eap")
    clean, corrupted = caches(model, pairs)
    eps, scale = 1e-5, float(graph.scores.abs().max())
    for name, s, r in graph.edges()[::7]:
        def moved(step: float) -> float:
            return moved_metric(model, graph, pairs, s, r, step, (clean, corrupted), every_position_logit_diff)

        derivative = (moved(eps) - moved(-eps)) / (2 * eps)
        assert abs(float(graph.scores[s, r]) - derivative) <= 1e-6 * scale, name
