"""Shared by the benchmarks: median wall time (synchronising around CUDA work), competitors
timed in turns, and the machine they ran on (CPU model and the ISA flags that decide our
kernels: Zen 4 and Zen 5 differ 2x on the same AVX-512 code; the load average)."""

from __future__ import annotations

import platform
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


ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_info() -> str:
    """"<CPU model> (<ISA flags>)" from /proc/cpuinfo (the platform's name elsewhere)."""
    name, flags = platform.processor() or platform.machine(), []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return f"{name} ({', '.join(flags) or 'no ISA flags read'})"


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model and ISA flags."""
    return torch.cuda.get_device_name() if device == "cuda" else cpu_info()


def count_flops(fn) -> tuple[float, float]:
    """(FLOPs that torch's `FlopCounterMode` counts, FLOPs of scaled-dot-product attention)
    of `fn()`. The counter misses CPU attention (SDPA's CPU kernels are not in its table),
    so every `F.scaled_dot_product_attention` call is counted here too: 4·B·H·Lq·Lk·D
    (QKᵀ and PV, a multiply-add as 2)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    attention = [0.0]
    sdpa = F.scaled_dot_product_attention

    def counted(q, k, v, *args, **kwargs):
        attention[0] += 4.0 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
        return sdpa(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = counted  # sam2 calls it through torch.nn.functional
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        F.scaled_dot_product_attention = sdpa
    return float(counter.get_total_flops()), attention[0]


def time_interleaved(fns: dict, device: str, reps: int, warmup: int) -> dict:
    """Median seconds per call of each fn, the fns taking turns within every repetition
    (so that load from other processes on a shared machine hits all of them alike). On
    CUDA each call is timed with events around it (device time)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
            else:
                times[name].append(median_time(fn, device, 1, warmup=0))
    return {name: statistics.median(t) for name, t in times.items()}


def load_average() -> str:
    """The 1-minute load average (other processes on a shared machine), "?" where unknown."""
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"
