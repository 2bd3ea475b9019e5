"""activation_patching equals brute-force patched forward passes; attribution_patching is its first-order
approximation; bad requests are clear UserErrors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minineo
from minineo.analysis import activation_patching, attribution_patching
from minineo.analysis.patching import SITES
from minineo.errors import UserError
from strategies import PATCHING_METRICS, patching_inputs

METRICS = PATCHING_METRICS


def brute_force(model, tokens, source_cache, metric, site, per, shape, mask):
    """metric(model(tokens, patch={name: value})) for every cell, one full forward pass each."""
    pos_axis, head_axis = SITES[site]
    out = torch.empty(shape)
    for cell in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape)).tolist():
        layer, rest = cell[0], cell[1:]
        name = f"blocks.{layer}.{site}"

        def patch(value, rest=rest, name=name):
            index = [slice(None)] * value.ndim
            if per == "pos":
                index[pos_axis] = rest[0]
            elif per == "head":
                index[head_axis] = rest[0]
            else:
                index[pos_axis], index[head_axis] = rest
            value = value.clone()
            value[tuple(index)] = source_cache[name][tuple(index)]
            return value

        out[tuple(cell)] = float(metric(model(tokens, patch={name: patch}, attention_mask=mask)))
    return out


@st.composite
def patching_cases(draw):
    arch = draw(st.sampled_from(["gpt2", "gpt_neo"]))
    layers = draw(st.integers(1, 3))
    pos = draw(st.integers(2, 8))
    shape = dict(layers=layers, heads=draw(st.sampled_from([1, 2, 4])), d_head=draw(st.sampled_from([4, 8])))
    if arch == "gpt_neo":  # local windows shorter than the sequence
        shape |= dict(window=draw(st.integers(1, pos)), kinds=draw(st.lists(st.sampled_from(["global", "local"]),
                                                                          min_size=layers, max_size=layers)))
    site = draw(st.sampled_from(list(SITES)))
    per = "pos" if SITES[site][1] is None else draw(st.sampled_from(["pos", "head", "head_pos"]))
    return dict(arch=arch, shape=shape, pos=pos, batch=draw(st.integers(1, 3)), site=site, per=per,
                n_changed=draw(st.integers(1, pos)), padded=draw(st.booleans()), noising=draw(st.booleans()),
                metric=draw(st.sampled_from(list(METRICS))), budget=draw(st.sampled_from([1, 10**5, 2**30])),
                seed=draw(st.integers(0, 2**16)))


@settings(max_examples=14)
@given(case=patching_cases())
def test_activation_patching_equals_brute_force(hf_pair, case):
    _, model = hf_pair(case["arch"], seed=case["seed"] % 3, weight_scale=2.0, **case["shape"])
    clean, corrupted, mask = patching_inputs(case)
    if case["noising"]:  # the other direction: patch corrupted activations into the clean run
        clean, corrupted = corrupted, clean
    metric = METRICS[case["metric"]]
    _, clean_cache = model.run_with_cache(clean, attention_mask=mask)
    engine = activation_patching(model, corrupted, clean_cache, metric, case["site"], case["per"],
                                 attention_mask=mask, memory_budget=case["budget"])
    expected = brute_force(model, corrupted, clean_cache, metric, case["site"], case["per"], engine.shape, mask)
    scale = max(1.0, float(expected.abs().max()))
    diff = float((engine - expected).abs().max())
    assert diff <= 1e-5 * scale, f"{case}: max |engine - brute force| {diff:.3g} (metric scale {scale:.3g})"


def test_shapes_and_denoising_ends(hf_pair):
    """Patching the whole resid_pre of layer 0 at every position recovers the clean metric exactly."""
    _, model = hf_pair("gpt_neo", layers=2, heads=4, window=3)
    clean = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1) % 97
    metric = METRICS["last logit diff"]
    logits, cache = model.run_with_cache(clean)
    per_pos = activation_patching(model, corrupted, cache, metric, "resid_pre", "pos")
    assert per_pos.shape == (2, 6)
    # only position 2 differs at layer 0: patching it alone gives the clean metric; others change nothing
    assert abs(float(per_pos[0, 2]) - float(metric(logits))) < 1e-5
    assert torch.allclose(per_pos[0, [0, 1, 3, 4, 5]], torch.tensor(float(metric(model(corrupted))), dtype=torch.float64), atol=1e-6)
    assert activation_patching(model, corrupted, cache, metric, "attn.z", "head").shape == (2, 4)
    assert activation_patching(model, corrupted, cache, metric, "z", "head_pos").shape == (2, 6, 4)


def test_a_metric_whose_reads_depend_on_the_logits_is_still_exact(hf_pair, monkeypatch):
    """If the guess of the positions the metric reads is wrong (the metric picks its position with an
    argmax), the unread logits are NaN, the metric returns NaN, and the engine redoes the sweep with all."""
    _, model = hf_pair("gpt2", layers=2, heads=2, weight_scale=3.0)
    clean = torch.randint(0, 97, (1, 7), generator=torch.Generator().manual_seed(30))
    corrupted = clean.clone()
    corrupted[:, 1] = (corrupted[:, 1] + 7) % 97

    def metric(logits):
        return logits[0, int(logits[0, -1].argmax()) % logits.shape[1], 0]

    from minineo.analysis import patching

    def wrong_guess(metric, logits):  # as if the probe had seen only the last position read
        read = torch.zeros(logits.shape[:2], dtype=torch.bool)
        read[:, -1] = True
        return read, float(metric(logits))

    monkeypatch.setattr(patching, "_read_positions", wrong_guess)
    _, cache = model.run_with_cache(clean)
    engine = activation_patching(model, corrupted, cache, metric, "resid_pre", "pos")
    expected = brute_force(model, corrupted, cache, metric, "resid_pre", "pos", engine.shape, None)
    assert not engine.isnan().any()
    assert float((engine - expected).abs().max()) <= 1e-5 * max(1.0, float(expected.abs().max()))


# ---- attribution patching --------------------------------------------------------------------------

def first_order_errors(model, tokens, cache, delta, metric, site, per, epsilons) -> list[float]:
    """max |attribution - exact effect| / max |exact effect| of patching `cache` + eps * `delta` into a run
    on `tokens` (whose own activations are `cache`), one per eps: O(eps) if attribution is the first order."""
    baseline = float(metric(model(tokens)))
    errors = []
    for eps in epsilons:
        shifted = {name: cache[name] + eps * delta[name] for name in delta}
        effect = activation_patching(model, tokens, shifted, metric, site, per).double() - baseline
        approx = attribution_patching(model, tokens, shifted, metric, site, per).double()
        errors.append(float((approx - effect).abs().max() / effect.abs().max()))
    return errors


@pytest.mark.parametrize("site, per", [("resid_pre", "pos"), ("attn.z", "head_pos"), ("attn.pattern", "head"),
                                       ("mlp.post", "pos")])
def test_attribution_is_exact_to_first_order(hf_pair, site, per):
    """For a clean cache = corrupted + eps * delta, attribution = exact patching + O(eps^2): the
    relative error shrinks ~10x when eps shrinks 10x (float64; GPT-2, whose scores are not upcast to float32)."""
    _, model = hf_pair("gpt2", layers=2, heads=2)
    model.double()
    tokens = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(3))
    metric = METRICS["log prob of every next token"]
    names = [f"blocks.{layer}.{site}" for layer in range(2)]
    _, cache = model.run_with_cache(tokens, names=names)
    g = torch.Generator().manual_seed(0)
    delta = {name: torch.randn(cache[name].shape, generator=g, dtype=torch.float64) for name in names}
    errors = first_order_errors(model, tokens, cache, delta, metric, site, per, (1e-3, 1e-4))
    assert errors[1] < errors[0] / 5 and errors[1] < 1e-3, errors


@pytest.mark.parametrize("name", ["tiny-neo", "tiny-gpt2"])
def test_attribution_is_exact_to_first_order_on_the_trained_models(name):
    """The same first-order identity on trained weights (sharp attention, large activations), along the
    direction an IOI patch really takes: the corrupted run's activations moved eps of the way to the clean
    run's. How well the first order predicts the whole patch is a property of the weights, not of the code
    (benchmarks/README.md: on the shipped tiny-neo the names' residual patches swap the answer, where the
    softmax is saturated and the gradient is near zero), so the correlation is measured there, not bounded here."""
    model = minineo.load(name).double()
    # byte-level: the prompts end in a space, so the answers' first bytes (M/J, A/P) are the next token
    clean = model.to_tokens(["When Mary and John went to the store, John gave a drink to ",
                             "When Anna and Paul went to the store, Paul gave a drink to "])
    corrupted = model.to_tokens(["When Mary and John went to the store, Mary gave a drink to ",
                                 "When Anna and Paul went to the store, Anna gave a drink to "])
    assert clean.shape == corrupted.shape and model.tokenizer.decode(clean[1, -3:].tolist()) == "to "
    answers, wrongs, rows = torch.tensor([ord("M"), ord("A")]), torch.tensor([ord("J"), ord("P")]), torch.arange(2)

    def metric(logits):
        return (logits[rows, -1, answers] - logits[rows, -1, wrongs]).mean()

    sites = [("resid_pre", "pos"), ("attn.z", "head"), ("mlp_out", "pos")]
    names = {site: [f"blocks.{layer}.{site}" for layer in range(model.config.n_layers)] for site, _ in sites}
    every = [name for site_names in names.values() for name in site_names]
    _, clean_cache = model.run_with_cache(clean, names=every)
    _, corrupted_cache = model.run_with_cache(corrupted, names=every)
    for site, per in sites:
        delta = {n: clean_cache[n] - corrupted_cache[n] for n in names[site]}  # the whole patch's direction
        errors = first_order_errors(model, corrupted, corrupted_cache, delta, metric, site, per, (1e-2, 1e-3))
        assert errors[1] < errors[0] / 5 and errors[1] < 0.05, (name, site, per, errors)


# ---- bad requests --------------------------------------------------------------------------------

def test_bad_requests_are_user_errors(hf_pair):
    _, model = hf_pair("gpt2", layers=2, heads=2)
    tokens = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("attn.z"))
    metric = METRICS["last logit diff"]
    with pytest.raises(UserError, match="cannot patch site 'ln1.scale'"):
        activation_patching(model, tokens, cache, metric, "ln1.scale", "pos")
    with pytest.raises(UserError, match="has no heads"):
        activation_patching(model, tokens, cache, metric, "resid_pre", "head")
    with pytest.raises(UserError, match="per='layer' is unknown"):
        activation_patching(model, tokens, cache, metric, "attn.z", "layer")
    with pytest.raises(UserError, match="clean cache has no 'blocks.0.resid_pre'.*names="):
        activation_patching(model, tokens, cache, metric, "resid_pre", "pos")
    with pytest.raises(UserError, match=r"shape.*same \(batch, pos\)"):
        activation_patching(model, tokens[:, :4], cache, metric, "attn.z", "pos")
    with pytest.raises(UserError, match=r"shape.*same \(batch, pos\)"):
        attribution_patching(model, tokens[:1], cache, metric, "attn.z", "head")
    with pytest.raises(UserError, match="must return a scalar"):
        activation_patching(model, tokens, cache, lambda logits: logits[:, -1, 0], "attn.z", "head")
    with pytest.raises(UserError, match="differentiable"):
        attribution_patching(model, tokens, cache, lambda logits: float(logits[0, -1, 0].detach()), "attn.z", "head")
