"""CUDA-graph decoding: after `compile=True` (Model.compile_fast_path) on CUDA, generate decodes on the
static-shape key/value cache with torch.compile's "reduce-overhead" mode, so each decode step replays one
captured CUDA graph; its greedy tokens equal HF's generate in float32.

On the CPU there are no CUDA graphs: the CUDA test skips and says so; the same static, compiled decode
path is checked against HF's tokens in the `slow` test (its compilation takes ~30 s or more here).
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import TEST_DEVICE

from minineo import report

pytestmark = pytest.mark.device


def hf_greedy(hf, prompt, new):
    device = next(hf.parameters()).device
    return hf.generate(prompt.to(device), max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None,
                       attention_mask=torch.ones_like(prompt, device=device))


def compiled_generate(model, prompt, new):
    """model.generate after compile_fast_path, failing (not falling back) if torch.compile fails."""
    model.compile_fast_path()
    kv = model.kv_cache(prompt.shape[0], 8)
    assert kv.static, "compile=True must default to the static-shape key/value cache"
    with report.collect() as said:
        out = model.generate(prompt, max_new_tokens=new)
    failures = [message for message in said if "torch.compile failed" in message]
    assert not failures, failures
    return out


@pytest.mark.skipif(not TEST_DEVICE.startswith("cuda"), reason="CUDA graphs exist only on CUDA: run with "
                    "MININEO_TEST_DEVICE=cuda (on the CPU, test_compiled_static_decoding_equals_hf_greedy_on_cpu)")
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_compiled_decoding_replays_cuda_graphs_and_equals_hf_greedy(hf_pair, arch):
    from torch._dynamo.utils import counters
    from torch.profiler import ProfilerActivity, profile

    hf, model = hf_pair(arch, layers=3, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    counters.clear()
    out = compiled_generate(model, prompt, 12)  # compiles and records the graphs
    assert torch.equal(out, hf_greedy(hf, prompt, 12))
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        again = model.generate(prompt, max_new_tokens=12)
        torch.cuda.synchronize()
    assert torch.equal(again, out)
    launches = [e for e in prof.events() if "cudaGraphLaunch" in e.name]
    assert len(launches) >= 11, f"{len(launches)} CUDA-graph launches for 12 decode steps"


@pytest.mark.slow
@pytest.mark.skipif(TEST_DEVICE != "cpu", reason="the CPU's variant of the CUDA-graph test")
def test_compiled_static_decoding_equals_hf_greedy_on_cpu(hf_pair):
    hf, model = hf_pair("gpt_neo", layers=2, window=3, n_ctx=64, weight_scale=3.0)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(compiled_generate(model, prompt, 10), hf_greedy(hf, prompt, 10))
