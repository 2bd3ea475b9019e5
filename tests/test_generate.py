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


def test_kv_cache_logits_equal_full_forward(hf_pair):
    from minineo.generate import KVCache
    from minineo.recording import Recorder

    _, model = hf_pair("gpt_neo", layers=2, window=2, n_ctx=64)
    tokens = torch.randint(0, 97, (1, 9))
    full = model(tokens)
    kv = KVCache(model.config.n_layers)
    steps = [model._core(tokens[:, :5], torch.arange(5)[None], None, Recorder(), False, kv)]
    for i in range(5, 9):
        steps.append(model._core(tokens[:, i:i + 1], torch.tensor([[i]]), None, Recorder(), False, kv))
    assert_close(torch.cat(steps, dim=1), full, "incremental vs full")


def test_sampling_is_reproducible_with_a_generator_and_respects_top_k(hf_pair):
    _, model = hf_pair("gpt2", layers=1)
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 8, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, model.generate(prompt, 8))  # top_k=1 sampling is greedy
    b = model.generate(prompt, 8, do_sample=True, generator=torch.Generator().manual_seed(5))
    c = model.generate(prompt, 8, do_sample=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b, c)
