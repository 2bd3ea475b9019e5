"""Measurement primitives: interleaved timing rounds, the device's matmul peak and copy bandwidth, a forward pass's FLOPs."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

import minineo


def forward_flops(config: minineo.Config, batch: int, pos: int) -> float:
    """Multiply-adds x 2 of one forward: the projections, q.k and pattern.v (causal half), the unembedding."""
    per_token = config.n_layers * (4 * config.d_model**2 + 2 * config.d_model * config.d_mlp) + config.d_model * config.d_vocab
    attention = 0.0
    for window in config.windows:
        keys = pos * (pos + 1) / 2 if window is None else sum(min(i + 1, window) for i in range(pos))
        attention += 2 * keys * config.d_model
    return 2 * batch * (pos * per_token + attention)


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_calls({"mm": lambda: a @ b}, device, rounds=5)["mm"]
    return 2 * size**3 / statistics.median(times) / 1e9


def memory_bandwidth_gbs(device: str, dtype: torch.dtype = torch.float32, megabytes: int = 256) -> float:
    """Measured copy bandwidth (GB/s): a tensor of `megabytes` read and written once per copy_."""
    n = megabytes * 2**20 // torch.empty((), dtype=dtype).element_size()
    src, dst = torch.randn(n, device=device).to(dtype), torch.empty(n, device=device, dtype=dtype)
    times = time_calls({"copy": lambda: dst.copy_(src)}, device, rounds=5)["copy"]
    return 2 * megabytes * 2**20 / statistics.median(times) / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(calls: dict[str, Callable], device: str, rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds: every variant once per round, so drift hits all of them alike."""
    times = {name: [] for name in calls}
    for fn in calls.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times
