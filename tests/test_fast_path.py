"""The fused fast path: compiled = eager, compiler failures fall back, reduced precision stays close."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import assert_close

from minineo import report


def test_compiled_fast_path_equals_eager(hf_pair):
    _, model = hf_pair("gpt_neo", layers=2, window=3)
    tokens = torch.randint(0, 97, (2, 12))
    eager = model(tokens)
    model.compile_fast_path()
    assert_close(model(tokens), eager, "compiled vs eager")
    assert model._compiled is not None, "the compiled path was not used (it fell back)"


def test_compiler_failure_falls_back_to_eager_with_a_warning(hf_pair):
    _, model = hf_pair("gpt2", layers=1)
    tokens = torch.randint(0, 97, (1, 5))
    eager = model(tokens)

    def broken(*args):
        raise RuntimeError("inductor exploded")

    model._compiled = broken
    with report.collect() as said:
        assert torch.equal(model(tokens), eager)
    assert len(said) == 1 and re.search("torch.compile failed .*inductor exploded.*running eagerly", said[0])
    assert model._compiled is None


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_bfloat16_fast_path_stays_close_to_float32(hf_pair, arch):
    _, model = hf_pair(arch, layers=2, window=3, weight_scale=2.0)
    tokens = torch.randint(0, 97, (2, 16))
    reference = model(tokens)
    low = model.to(torch.bfloat16)
    for explicit in (False, True):
        logits = low(tokens, explicit=explicit).float()
        # bfloat16 keeps 8 bits of mantissa: a few percent of the logit scale is its round-off
        assert float((logits - reference).abs().max()) < 0.05 * float(reference.abs().max()) + 0.05
    assert_close(low(tokens).float(), low(tokens, explicit=True).float(), "bf16 fused vs explicit", atol=0.05)


def test_bfloat16_load_keeps_values_and_shapes_with_column_major_matmul_weights(hf_pair):
    """On CPU, bfloat16 matmul weights are stored transposed (10x faster oneDNN path): same values, same views."""
    import minineo

    _, model = hf_pair("gpt_neo", layers=2, window=3)
    fast = minineo.load(model.source, dtype=torch.bfloat16)
    plain = model.to(torch.bfloat16)
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters()):
        assert a.shape == b.shape and torch.equal(a, b), name
    assert fast.blocks[0].mlp.W_in.stride() == (1, fast.config.d_model)
    assert torch.equal(fast.blocks[1].attn.W_Q, plain.blocks[1].attn.W_Q)
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    diff = (fast(tokens).float() - plain(tokens).float()).abs().max()
    assert float(diff) < 0.05 * float(plain(tokens).float().abs().max())  # bfloat16 round-off of a different sum order
