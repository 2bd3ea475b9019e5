"""The forward pass timed: minineo's fast path, compiled path and run_with_cache against HF's attention
implementations (and TransformerLens 4 where installed), with throughput, share of the matmul peak, peak
memory and the logits' distance to HF float32."""

from __future__ import annotations

import statistics
import warnings
from typing import Callable

import torch

from benchmarks.memory import PeakMemory
from benchmarks.results import Result
from benchmarks.timing import forward_flops, time_calls


@torch.inference_mode()
def bench_shape(run, name, model, compiled, hf_models, hf32, tl, device, dtype, shape, rounds) -> None:
    batch, pos = shape
    tokens = torch.randint(0, model.config.d_vocab, shape, device=device)
    calls: dict[str, Callable] = {"minineo fast": lambda: model(tokens),
                                  "minineo run_with_cache (all names)": lambda: model.run_with_cache(tokens)}
    if compiled is not None:
        calls["minineo compiled"] = lambda: compiled(tokens)
    for impl, hf in hf_models.items():
        calls[f"HF {impl}"] = lambda hf=hf: hf(tokens)
    if tl is not None:
        calls["TransformerLens forward"] = lambda: tl(tokens)
        calls["TransformerLens run_with_cache"] = lambda: tl.run_with_cache(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = time_calls(calls, device, rounds)
    reference = "HF sdpa" if "HF sdpa" in calls else "HF eager"
    flops = forward_flops(model.config, batch, pos)
    peak = run.matmul_peak_gflops[f"{device}/{str(dtype)[6:]}"]
    float32_logits = hf32(tokens).logits.float()
    memory = PeakMemory(device)
    for variant, ts in times.items():
        median = statistics.median(ts)
        result = Result(name, device, str(dtype)[6:], shape, variant, median * 1e3, batch * pos / median,
                        flops / median / 1e9, flops / median / 1e9 / peak, memory.measure(calls[variant]),
                        statistics.median(times[reference]) / median)
        if variant.startswith("minineo"):
            out = calls[variant]()
            logits = out[0] if isinstance(out, tuple) else out
            result.max_abs_dlogit = float((logits.float() - float32_logits).abs().max())
        if variant == reference:
            result.note = "reference"
        run.results.append(result)
        print(f"{name} {device} {result.dtype} {batch}x{pos} {variant}: {result.median_ms:.1f} ms, "
              f"{result.ratio_to_hf:.2f}x {reference}, {100 * result.peak_fraction:.0f}% of peak", flush=True)
