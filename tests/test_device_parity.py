"""Half precision against HF on the test device (MININEO_TEST_DEVICE; the CPU by default).

The oracle is HF eager in float32 on the same device. In float16 / bfloat16 neither library can match it
to round-off, so the property is: minineo's logits are no further from HF float32 than HF's own logits in
that dtype (times a margin), and within a documented distance of HF's in that dtype. The tolerances are
relative to the largest float32 logit and sized from the dtypes' unit round-off (float16 2^-11, bfloat16
2^-8) times the depth of these small models: a wrong formula moves logits by far more (a wrong GELU
variant ~7e-4 absolute in float32, a missing GPT-Neo upcast overflows to inf).
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import hf_forward

pytestmark = pytest.mark.device

# max |minineo - HF in the same dtype| <= TOLERANCE * max |HF float32 logit|
TOLERANCE = {"float16": 4e-3, "bfloat16": 3e-2}  # ~3x the largest seen on CPU (1.1e-3, 1.05e-2)
MARGIN = 2.0  # minineo's error vs float32 may be at most MARGIN x HF's own (plus one tolerance of slack)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_logits_are_as_close_to_float32_as_hfs(hf_pair, arch, dtype):
    hf, model = hf_pair(arch, layers=3, heads=4, d_head=16, window=5, n_ctx=64, weight_scale=3.0)
    tokens = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(0))
    reference = hf_forward(hf, tokens).logits  # float32 HF eager on the device
    scale = float(reference.abs().max())
    low = getattr(torch, dtype)
    hf_low = hf_forward(hf.to(low), tokens).logits.float()
    hf_error = float((hf_low - reference).abs().max())
    model = model.to(low)
    for explicit in (True, False):
        ours = model(tokens, explicit=explicit).float().to(reference.device)
        assert ours.isfinite().all(), f"{dtype} logits not finite (explicit={explicit})"
        error = float((ours - reference).abs().max())
        assert error <= MARGIN * hf_error + TOLERANCE[dtype] * scale, (
            f"{dtype} explicit={explicit}: |minineo - HF float32| {error:.3g}, HF {dtype}'s own {hf_error:.3g}")
        to_hf = float((ours - hf_low).abs().max())
        assert to_hf <= TOLERANCE[dtype] * scale, f"{dtype} explicit={explicit}: |minineo - HF {dtype}| {to_hf:.3g}"


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_greedy_tokens_equal_hf_generate_on_the_device(hf_pair, arch):
    hf, model = hf_pair(arch, layers=3, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    device = next(hf.parameters()).device
    expected = hf.generate(prompt.to(device), max_new_tokens=12, do_sample=False,
                           attention_mask=torch.ones_like(prompt, device=device), pad_token_id=0, eos_token_id=None)
    for static in (False, True):
        assert torch.equal(model.generate(prompt, max_new_tokens=12, static=static), expected), f"static={static}"
