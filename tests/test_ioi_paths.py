"""IOI on the circuit tools: the ABC prompts line up with the IOI prompts token for token, and ioi_analysis's
path-patching columns equal Wang et al.'s definition run as brute force on the embedded model."""

from __future__ import annotations

import torch
from test_path_patching import brute_force

import minineo
from minineo import analysis


def test_abc_prompts_line_up_with_the_ioi_prompts():
    model = minineo.load()
    data = analysis.ioi_dataset(model, n=12, seed=3)
    assert torch.equal(data.attention_mask, data.abc_attention_mask)
    for row in range(12):  # only the subject's second mention differs: a name's bytes, S -> C, at the same place
        where = (data.tokens[row] != data.abc_tokens[row]).nonzero().flatten()
        assert 1 <= len(where) <= len(data.s_names[row])
        assert int(where[-1] - where[0]) < len(data.s_names[row])


def test_ioi_path_effects_equal_brute_force_path_patching():
    model = minineo.load()
    data = analysis.ioi_dataset(model, n=4, seed=1)
    result = analysis.ioi_analysis(model, data, ablation=False, n_name_movers=2)
    metric = lambda logits: analysis.ioi.logit_diff(logits, data)  # noqa: E731
    clean = float(metric(model(data.tokens, attention_mask=data.attention_mask)))
    cfg = model.config
    dla = result.head_dla.flatten()
    assert result.name_movers == [divmod(int(i), cfg.n_heads) for i in dla.argsort(descending=True)[:2]]
    receivers = [(layer, head, "q") for layer, head in result.name_movers]
    for got, target in ((result.head_path_logits, "logits"), (result.head_path_name_movers, receivers)):
        want = torch.tensor([[brute_force(model, data.tokens, data.abc_tokens, metric, [(layer, head)], target,
                                          data.attention_mask) - clean
                              for head in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
        assert got.shape == (cfg.n_layers, cfg.n_heads)
        assert (got - want).abs().max() <= 1e-5 * max(1.0, abs(clean)), (target, got, want)
    # the name mover's own path to the logits carries most of the logit difference (its direct effect)
    top = result.name_movers[0]
    assert float(result.head_path_logits[top]) < -0.5 * result.logit_diff, result.head_path_logits
    columns = result.head_columns()
    assert list(columns)[:2] == ["DLA on IO-S", "path -> logits"]  # ablation was not run: no column
    assert all(v.shape == (cfg.n_layers, cfg.n_heads) for v in columns.values())
