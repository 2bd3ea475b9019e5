"""One method timed against one plain forward of the same batch, round by round (the discovery benchmark's unit).

Shared by benchmarks/discovery_worker.py (minineo) and benchmarks/eap_ig_peer.py (EAP-IG, in its own venv, which
imports this file by path): it needs only the standard library.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def interleaved_rounds(call: Callable[[], Any], forward: Callable[[], Any], rounds: int,
                       peak_memory: Callable[[Callable[[], Any]], float]) -> tuple[Any, dict]:
    """(call's last value, figures): one untimed call under `peak_memory` (e.g. PeakMemory("cpu").measure, whose MB go
    in "peak_extra_mb"; it also warms the call up: lazy imports, first allocations), then per round one `forward()`
    and one `call()`, timed, after a warm-up forward.

    Wall and this thread's CPU seconds (with 1 torch thread the forward and backward run on it; the memory sampler's
    thread is neither running nor counted during the timed rounds): on a shared machine the CPU time measures the
    work, the wall time the load."""
    result: dict = {}
    box: list = []
    result["peak_extra_mb"] = peak_memory(lambda: box.append(call()))
    value = box[0]
    forward()  # warm-up
    times, forward_times, cpu, forward_cpu = [], [], [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.thread_time()
        forward()
        forward_times.append(time.perf_counter() - start)
        forward_cpu.append(time.thread_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.thread_time()
        value = call()
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    result["wall_seconds"], result["forward_wall_seconds"] = statistics.median(times), statistics.median(forward_times)
    result["seconds"], result["forward_seconds"] = statistics.median(cpu), statistics.median(forward_cpu)
    result["wall_seconds_per_round"], result["forward_wall_seconds_per_round"] = times, forward_times
    return value, result
