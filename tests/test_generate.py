"""Generation with a key/value cache against HF's generate, and the compiled fast path against eager."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_greedy_generation_equals_hf_generate(hf_pair, arch):
    hf, model = hf_pair(arch, layers=3, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    ours = model.generate(prompt, max_new_tokens=12)
    expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt),
                           pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours, expected)


def test_left_padded_generation_equals_unpadded(hf_pair):
    _, model = hf_pair("gpt_neo", layers=3, window=3, n_ctx=64, weight_scale=3.0)
    short = torch.randint(0, 97, (1, 4), generator=torch.Generator().manual_seed(1))
    long = torch.randint(0, 97, (1, 7), generator=torch.Generator().manual_seed(2))
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    out = model.generate(batch, max_new_tokens=10, attention_mask=mask)
    assert torch.equal(out[0, 3:], model.generate(short, max_new_tokens=10)[0])
    assert torch.equal(out[1], model.generate(long, max_new_tokens=10)[0])


@pytest.mark.parametrize("static", [False, True])
def test_decode_logits_equal_full_forward(hf_pair, static):
    _, model = hf_pair("gpt_neo", layers=2, window=2, n_ctx=64)
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    full = model(tokens)  # (batch, pos, d_vocab)
    kv = model.kv_cache(2, 12, static=static)  # room to spare: static mode masks the unused slots
    steps = [model.decode(tokens[:, :5], kv, torch.arange(5).expand(2, 5))]
    for i in range(5, 9):
        steps.append(model.decode(tokens[:, i:i + 1], kv, torch.full((2, 1), i)))
    assert kv.length == 9
    for i, logits in zip(range(4, 9), steps):
        assert_close(logits, full[:, i], f"decode vs full forward at position {i}")


def test_kv_cache_is_preallocated_and_refuses_overflow(hf_pair):
    _, model = hf_pair("gpt2", layers=1, n_ctx=16)
    kv = model.kv_cache(1, 4)
    buffers = [t.data_ptr() for t in kv.keys + kv.values]
    model.decode(torch.tensor([[1, 2, 3]]), kv, torch.arange(3)[None])
    model.decode(torch.tensor([[4]]), kv, torch.tensor([[3]]))
    assert [t.data_ptr() for t in kv.keys + kv.values] == buffers  # written in place, never reallocated
    with pytest.raises(ValueError, match="do not fit"):
        model.decode(torch.tensor([[5]]), kv, torch.tensor([[4]]))
    with pytest.raises(ValueError, match="n_ctx"):
        model.kv_cache(1, 17)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_left_padded_greedy_generation_equals_hf_generate(hf_pair, arch):
    hf, model = hf_pair(arch, layers=3, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(1, 97, (3, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompt)
    mask[0, :3], mask[2, :1] = 0, 0
    prompt = prompt.masked_fill(mask == 0, 0)
    expected = hf.generate(prompt, max_new_tokens=10, do_sample=False, attention_mask=mask, pad_token_id=0,
                           eos_token_id=None)
    assert torch.equal(model.generate(prompt, max_new_tokens=10, attention_mask=mask), expected)
    assert torch.equal(model.generate(prompt, max_new_tokens=10, attention_mask=mask, static=True), expected)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_static_shape_decoding_gives_the_same_tokens(hf_pair, arch):
    """The CUDA-graph-friendly mode (whole buffer, tensor slot, mask) decodes exactly like the default one."""
    _, model = hf_pair(arch, layers=3, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(5))
    dynamic = model.generate(prompt, max_new_tokens=15)
    assert torch.equal(model.generate(prompt, max_new_tokens=15, static=True), dynamic)
    kv = model.kv_cache(2, 20, static=True)
    shapes = set()
    model.decode(prompt, kv, torch.arange(5).expand(2, 5))
    for i in range(5, 20):  # feed the generated tokens back one at a time
        masks = kv.masks(1, None)
        shapes.add(tuple((w, tuple(m.shape)) for w, m in sorted(masks.items(), key=str)))
        model.decode(dynamic[:, i:i + 1], kv, torch.full((2, 1), i))
    assert len(shapes) == 1  # every decode step sees the same shapes


def test_sampling_is_reproducible_with_a_generator_and_respects_top_k(hf_pair):
    _, model = hf_pair("gpt2", layers=1)
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 8, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, model.generate(prompt, 8))  # top_k=1 sampling is greedy
    b = model.generate(prompt, 8, do_sample=True, generator=torch.Generator().manual_seed(5))
    c = model.generate(prompt, 8, do_sample=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b, c)


@pytest.mark.parametrize("options,named", [
    (dict(top_k=5), "top_k=5 only applies when sampling"),
    (dict(temperature=0.7), "temperature=0.7 only applies when sampling"),
    (dict(temperature=0), "temperature=0 only applies"),
    (dict(generator=torch.Generator().manual_seed(0)), "a generator only applies when sampling"),
    (dict(temperature=0.5, top_k=3), "temperature=0.5 and top_k=3 only apply when sampling"),
])
def test_a_sampling_option_without_do_sample_is_refused_naming_do_sample(options, named):
    """Findings 21: greedy decoding ignores temperature / top_k / a generator, which HF's generate only warns about
    (a warning PYTHONWARNINGS=ignore silences); minineo refuses them and says do_sample=True is the fix."""
    import minineo
    from minineo.errors import UserError

    model = minineo.load()
    with pytest.raises(UserError, match=named) as raised:
        model.generate(torch.tensor([[1, 2, 3]]), 4, **options)
    assert "do_sample=True" in str(raised.value)
    if options.get("temperature") != 0:  # 0 is no sampling temperature (greedy is do_sample=False, the default)
        model.generate(torch.tensor([[1, 2, 3]]), 4, do_sample=True, **options)  # the same options sample
    model.generate(torch.tensor([[1, 2, 3]]), 4, temperature=1.0)  # 1.0 changes nothing: greedy as asked


def test_do_sample_must_be_a_bool():
    import minineo
    from minineo.errors import WrongTypeError

    with pytest.raises(WrongTypeError, match="do_sample"):
        minineo.load().generate(torch.tensor([[1, 2, 3]]), 4, do_sample="yes")
