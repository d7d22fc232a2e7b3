"""Timing shared by the benchmarks: median wall time, synchronising around CUDA work."""

from __future__ import annotations

import statistics
import time

import torch


def median_time(fn, device: str, reps: int, warmup: int = 3) -> float:
    """Median seconds of `fn()` over `reps` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
