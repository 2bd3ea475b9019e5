"""Peak extra memory of one call (no minineo import: the TransformerLens 3 venv runs it too)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import torch


class PeakMemory:
    """Peak extra memory of a call: CUDA's allocator counter, or the process RSS sampled every millisecond."""

    def __init__(self, device: str):
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def measure(self, fn: Callable) -> float | None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        if not Path("/proc/self/statm").exists():
            return None
        _release_freed_memory()
        base, peak, done = self._rss_mb(), [0.0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self._rss_mb())
                time.sleep(0.001)

        thread = threading.Thread(target=sample)
        thread.start()
        try:
            fn()
        finally:  # a failing call must not leave the sampler running (the process would never exit)
            done.set()
            thread.join()
        return max(0.0, peak[0] - base)


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc), so RSS growth measures this call's own peak."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
