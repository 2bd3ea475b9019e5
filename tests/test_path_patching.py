"""path_patching equals Wang et al.'s definition run as brute force: full forward passes built here only from
`model(tokens, patch=...)` and `run_with_cache` (every head's z frozen at its clean value but the senders',
then the receivers' inputs patched into a clean run); bad requests are clear UserErrors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minineo.analysis import path_patching
from minineo.errors import UserError
from strategies import PATCHING_METRICS, patching_inputs

METRICS = PATCHING_METRICS


def brute_force(model, clean, corrupted, metric, senders, receivers, mask):
    """Wang et al. (2022) step by step, one set of sender heads: a float."""
    n_layers = model.config.n_layers
    z = [f"blocks.{layer}.attn.z" for layer in range(n_layers)]
    _, clean_cache = model.run_with_cache(clean, names=z, attention_mask=mask)
    _, corrupted_cache = model.run_with_cache(corrupted, names=z, attention_mask=mask)
    frozen = {}
    for layer, name in enumerate(z):
        value = clean_cache[name].clone()  # every head frozen at its clean output...
        for sender_layer, head in senders:
            if sender_layer == layer:
                value[:, :, head] = corrupted_cache[name][:, :, head]  # ...but the senders, from the corrupted run
        frozen[name] = value
    if receivers == "logits":  # the receiver is the final residual: its logits are this run's
        return float(metric(model(clean, patch=frozen, attention_mask=mask)))
    resid_names = sorted({f"blocks.{layer}.resid_pre" for layer, _, _ in receivers})
    _, recorded = model.run_with_cache(clean, names=resid_names, patch=frozen, attention_mask=mask)
    heads_by_site = {}
    for layer, head, kind in receivers:
        heads_by_site.setdefault((layer, kind), []).append(head)

    def receiver_patch(layer, heads):
        def patch(x):  # (batch, pos, head, d_model)
            x = x.clone()
            for head in heads:
                x[:, :, head] = recorded[f"blocks.{layer}.resid_pre"]
            return x
        return patch

    patch = {f"blocks.{layer}.{kind}_input": receiver_patch(layer, heads) for (layer, kind), heads in heads_by_site.items()}
    return float(metric(model(clean, patch=patch, attention_mask=mask)))


@st.composite
def path_cases(draw):
    arch = draw(st.sampled_from(["gpt2", "gpt_neo"]))
    layers = draw(st.integers(1, 3))
    heads = draw(st.sampled_from([1, 2, 4]))
    pos = draw(st.integers(2, 8))
    shape = dict(layers=layers, heads=heads, d_head=draw(st.sampled_from([4, 8])))
    if arch == "gpt_neo":  # local windows shorter than the sequence
        shape |= dict(window=draw(st.integers(1, pos)), kinds=draw(st.lists(st.sampled_from(["global", "local"]),
                                                                          min_size=layers, max_size=layers)))
    head = st.tuples(st.integers(0, layers - 1), st.integers(0, heads - 1))
    receivers = draw(st.one_of(st.just("logits"), st.lists(st.tuples(st.integers(0, layers - 1), st.integers(0, heads - 1),
                                                                      st.sampled_from("qkv")), min_size=1, max_size=3,
                                                             unique=True)))  # a repeated one is refused
    senders = draw(st.one_of(st.just("heads"), st.lists(head, min_size=1, max_size=3, unique=True)))
    return dict(arch=arch, shape=shape, pos=pos, batch=draw(st.integers(1, 3)), senders=senders, receivers=receivers,
                n_changed=draw(st.integers(1, pos)), padded=draw(st.booleans()),
                metric=draw(st.sampled_from(list(METRICS))), budget=draw(st.sampled_from([1, 10**5, 2**30])),
                seed=draw(st.integers(0, 2**16)))


@settings(max_examples=16)
@given(case=path_cases())
def test_path_patching_equals_brute_force(hf_pair, case):
    _, model = hf_pair(case["arch"], seed=case["seed"] % 3, weight_scale=2.0, **case["shape"])
    clean, corrupted, mask = patching_inputs(case)
    metric = METRICS[case["metric"]]
    got = path_patching(model, clean, corrupted, metric, case["senders"], case["receivers"], attention_mask=mask,
                        memory_budget=case["budget"])
    cfg = model.config
    if case["senders"] == "heads":
        assert got.shape == (cfg.n_layers, cfg.n_heads)
        want = torch.tensor([[brute_force(model, clean, corrupted, metric, [(layer, head)], case["receivers"], mask)
                              for head in range(cfg.n_heads)] for layer in range(cfg.n_layers)], dtype=torch.float64)
    else:
        assert got.shape == ()
        want = torch.tensor(brute_force(model, clean, corrupted, metric, case["senders"], case["receivers"], mask),
                            dtype=torch.float64)
    scale = max(1.0, float(want.abs().max()))
    diff = float((got - want).abs().max())
    assert diff <= 1e-5 * scale, f"{case}: max |path patching - brute force| {diff:.3g} (metric scale {scale:.3g})"


def test_the_ends_of_path_patching(hf_pair):
    """Senders at or after every receiver change nothing (the clean metric); with every head as a sender and the
    logits as receiver, path patching is the corrupted run with attention heads patched but MLPs on clean input
    only through the residual -- i.e. exactly a run whose every z is the corrupted one."""
    _, model = hf_pair("gpt_neo", layers=3, heads=2, window=2, weight_scale=2.0)
    clean = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[:, 1] = (corrupted[:, 1] + 5) % 97
    metric = METRICS["last logit diff"]
    clean_value = float(metric(model(clean)))
    to_layer_1 = path_patching(model, clean, corrupted, metric, "heads", [(1, 0, "q"), (1, 1, "v")])
    assert torch.equal(to_layer_1[1:], torch.full((2, 2), clean_value, dtype=torch.float64))
    every = [(layer, head) for layer in range(3) for head in range(2)]
    all_z = {f"blocks.{layer}.attn.z": model.run_with_cache(corrupted, names=[f"blocks.{layer}.attn.z"])[1][f"blocks.{layer}.attn.z"]
             for layer in range(3)}
    want = float(metric(model(clean, patch=all_z)))
    assert abs(float(path_patching(model, clean, corrupted, metric, every)) - want) < 1e-5 * max(1, abs(want))


def test_bad_requests_are_clear_user_errors(hf_pair):
    _, model = hf_pair("gpt2", layers=2, heads=2)
    clean = torch.randint(0, 97, (1, 5))
    metric = METRICS["last logit diff"]
    cases = [
        (dict(corrupted_tokens=clean[:, :4]), "differ in shape"),
        (dict(senders="mlps"), "senders='mlps' is unknown"),
        (dict(senders=[(2, 0)]), "sender head \\(2, 0\\) does not exist"),
        (dict(senders=[]), "senders is empty"),
        (dict(receivers="resid"), "receivers='resid' is unknown"),
        (dict(receivers=[(1, 0, "z")]), "must be 'q', 'k' or 'v'"),
        (dict(receivers=[(1, 0)]), "list of \\(layer, head, 'q'\\|'k'\\|'v'\\)"),
        (dict(receivers=[(0, 5, "q")]), "receiver head \\(0, 5\\) does not exist"),
    ]
    for kwargs, message in cases:
        args = dict(model=model, clean_tokens=clean, corrupted_tokens=clean, metric=metric) | kwargs
        with pytest.raises(UserError, match=message):
            path_patching(**args)
    padded = torch.tensor([[1, 1, 1, 1, 1]])
    padded.attention_mask = torch.tensor([[0, 1, 1, 1, 1]])
    with pytest.raises(UserError, match="different attention masks"):
        path_patching(model, clean, padded, metric)
