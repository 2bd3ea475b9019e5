"""One GPT-Neo local layer's attention: the compiled block-sparse flex kernel against scaled_dot_product_attention
with the boolean window mask (what the eager fast path runs) and plain causal SDPA (dense, no window), timed
interleaved in one process; the flex output is checked against the explicit path (the spec).

    python -m benchmarks.local_attention [--shape 1x12x2048x64] [--window 256] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import json
import statistics
import time
import warnings

import torch

from benchmarks import description
from benchmarks.timing import synchronize, time_calls
from minineo.boundary import ScriptParser, run_script
from minineo.forward.attention import allowed_keys, attend_explicit, attend_fused
from minineo.forward.flex import attend_block_sparse
from minineo.record.recording import Recorder


def bench_local_attention(shape: tuple[int, int, int, int], window: int, device: str, dtype: torch.dtype,
                          rounds: int, compiled: bool = True) -> dict:
    """Median ms per variant, flex's compile seconds, and each variant's max |z - explicit z| (float32 spec).

    `compiled=False` (the smoke run) times eager flex attention instead, which is dense and slow: it checks the
    benchmark, not the kernel."""
    batch, head, pos, d_head = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, pos, head, d_head, generator=g).to(device, dtype) for _ in range(3))
    index = torch.arange(pos, device=device)
    allowed = allowed_keys(index, index, window, None)  # (1, 1, pos, pos)
    flex = torch.compile(attend_block_sparse) if compiled else attend_block_sparse
    label = "flex block-sparse (compiled)" if compiled else "flex (eager: dense, smoke run)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synchronize(device)
        start = time.perf_counter()
        flex(q, k, v, allowed, 1.0, False)
        synchronize(device)
        compile_s = time.perf_counter() - start
        calls = {label: lambda: flex(q, k, v, allowed, 1.0, False),
                 "SDPA + boolean window mask": lambda: attend_fused(q, k, v, allowed, 1.0, False),
                 "SDPA causal, no window (dense)": lambda: attend_fused(q, k, v, None, 1.0, False)}
        times = time_calls(calls, device, rounds)
    spec = attend_explicit(q.float(), k.float(), v.float(), allowed, 1.0, False, Recorder(), "")
    medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    return {"shape": list(shape), "window": window, "device": device, "dtype": str(dtype)[6:], "rounds": rounds,
            "compile_s": compile_s, "median_ms": medians,
            "flex_over_masked_sdpa": medians[label] / medians["SDPA + boolean window mask"], "flex_variant": label,
            "max_abs_diff_vs_explicit": {name: float((fn().float() - spec).abs().max())
                                         for name, fn in list(calls.items())[:2]}}


def main(argv: list[str] | None = None) -> dict:
    parser = ScriptParser("benchmarks.local_attention", description=description(__doc__))
    parser.add_argument("--shape", default="1x12x2048x64", help="batch x head x pos x d_head")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    shape = tuple(int(n) for n in args.shape.split("x"))
    result = bench_local_attention(shape, args.window, args.device, getattr(torch, args.dtype), args.rounds)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_script(main)
