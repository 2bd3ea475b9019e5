"""Greedy generation timed: minineo's `generate` against HF's `generate` on the same weights, same tokens checked."""

from __future__ import annotations

import statistics
import warnings

import torch

from benchmarks.results import GenerationResult
from benchmarks.timing import time_calls


@torch.inference_mode()
def bench_generation(run, name, model, hf, device, dtype, shape, rounds, label: str = "minineo generate") -> None:
    """Greedy model.generate against HF's generate (use_cache=True, its default attention), same weights.

    `label` names minineo's variant (e.g. "minineo generate (compiled)" for a model after compile_fast_path)."""
    batch, prompt, new = shape
    tokens = torch.randint(0, model.config.d_vocab, (batch, prompt), device=device)
    mask = torch.ones_like(tokens)
    calls = {label: lambda: model.generate(tokens, max_new_tokens=new, eos_token_id=None),
             "HF generate": lambda: hf.generate(tokens, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                                do_sample=False, use_cache=True, pad_token_id=0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = torch.equal(calls[label](), calls["HF generate"]())
        times = time_calls(calls, device, rounds)
    hf_median = statistics.median(times["HF generate"])
    for variant, ts in times.items():
        median = statistics.median(ts)
        result = GenerationResult(name, device, str(dtype)[6:], shape, variant, median, batch * new / median,
                                  hf_median / median, None if variant == "HF generate" else same)
        run.generation.append(result)
        print(f"{name} {device} {result.dtype} generate {batch}x{prompt}+{new} {variant}: {result.tokens_per_s:.1f} tok/s, "
              f"{result.ratio_to_hf:.2f}x HF" + ("" if result.same_tokens_as_hf is None else f", same tokens: {same}"), flush=True)
