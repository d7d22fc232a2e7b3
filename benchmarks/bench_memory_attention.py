"""FastMemoryAttention vs stock sam2 MemoryAttention (eager and torch.compile), one process.

All three run the same random-weight tiny model (sam2.1 config; the memory attention is
identical in every sam2 / sam2.1 size) on the same inputs, under `torch.no_grad()`.
Outputs are checked against stock eager before anything is timed.

FLOPs (2 per multiply-add) are counted for *stock's* computation, for all 4 layers:
self-attention q/k/v/out projections, QK^T and PV; cross-attention q/out projections,
the 64->256 k and v projections of all M memory tokens, QK^T and PV with stock's 256-d V;
the 256->2048->256 MLP. Our path skips the V projection and does PV on 64-d values, so it
does fewer FLOPs; its GFLOP/s column divides the same stock count by our time (an
"effective" rate, so that the three rates compare like for like).

    python benchmarks/bench_memory_attention.py --sizes 256 512 --frames 7 --batch 1 4
    python benchmarks/bench_memory_attention.py --device cuda --dtype bfloat16 --sizes 1024
"""

from __future__ import annotations

import argparse

import torch
import torch._inductor.config

from _timing import device_name, load_average, time_interleaved
from sam2rl_fast import FastMemoryAttention
from sam2rl_fast.testing import (
    build_random_predictor,
    memory_attention_inputs,
    rel_err,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def stock_flops(Nq: int, M: int, B: int, layers: int = 4, d: int = 256, C: int = 64,
                dff: int = 2048) -> int:
    """FLOPs of one stock MemoryAttention call (see the module docstring)."""
    self_attn = 4 * Nq * d * d + 2 * Nq * Nq * d
    cross_attn = 2 * Nq * d * d + 2 * M * C * d + 2 * Nq * M * d
    mlp = 2 * Nq * d * dff
    return 2 * B * layers * (self_attn + cross_attn + mlp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="float32")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, nargs="+", default=[7], help="memory frames, 1..7")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="objects B")
    ap.add_argument("--ptrs", type=int, default=16, help="object pointers (x4 tokens), 0..16")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip stock under torch.compile")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    args = ap.parse_args()
    # Inductor's parallel compile workers are separate processes that stay busy after a
    # compile returns; on a 2-core machine they slowed every later timing (all three
    # implementations alike) by ~6x. Compile in-process.
    torch._inductor.config.compile_threads = 1
    dev, dt = args.device, DTYPES[args.dtype]
    tol = 1e-4 if dt == torch.float32 else 3e-2
    print(f"# device {dev} ({device_name(dev)}), dtype {args.dtype}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {args.ptrs} object pointers, median of "
          f"{args.reps} (the three take turns in every repetition); 1-min load average "
          f"{load_average()} at start")
    print("# GFLOP = stock's FLOPs; every GF/s column (ours included) is that count / time")
    print(f"{'img':>5}{'B':>3}{'mem':>4}{'M':>7}{'GFLOP':>7}{'stock ms':>10}{'comp. ms':>10}"
          f"{'ours ms':>9}{'stock GF/s':>11}{'comp. GF/s':>11}{'ours GF/s':>10}{'vs stock':>9}"
          f"{'vs comp.':>9}")
    for size in args.sizes:
        side = size // 16
        Nq = side * side
        stock = build_random_predictor("sam2.1", size).memory_attention.eval().to(dev, dt)
        fast = FastMemoryAttention.from_sam2(stock)
        compiled = None if args.no_compile else torch.compile(stock, mode=args.compile_mode)
        for n_mem in args.frames:
            for B in args.batch:
                n_ptr = 4 * args.ptrs
                inputs = memory_attention_inputs(side, B, n_mem, n_ptr, device=dev, dtype=dt)
                M = inputs[1].shape[0]

                def run(module):
                    return lambda: module(*inputs, num_obj_ptr_tokens=n_ptr)

                with torch.no_grad():
                    ref = run(stock)()
                    err = rel_err(run(fast)().float(), ref.float())
                    if err > tol:
                        raise SystemExit(f"ours disagrees with stock at {size} px, B={B}, "
                                         f"{n_mem} frames: rel err {err:.2e} > {tol}")
                    fns = {"stock": run(stock), "ours": run(fast)}
                    if compiled is not None:
                        err_c = rel_err(run(compiled)().float(), ref.float())
                        if err_c > tol:
                            raise SystemExit(f"compiled stock disagrees: rel err {err_c:.2e}")
                        fns["compiled"] = run(compiled)
                    t = time_interleaved(fns, dev, args.reps, args.warmup)
                t_s, t_o, t_c = t["stock"], t["ours"], t.get("compiled")
                gf = stock_flops(Nq, M, B) / 1e9
                comp = ((f"{t_c * 1e3:>10.1f}", f"{gf / t_c:>11.0f}", f"{t_c / t_o:>8.2f}x")
                        if compiled is not None else (f"{'-':>10}", f"{'-':>11}", f"{'-':>9}"))
                print(f"{size:>5}{B:>3}{n_mem:>4}{M:>7}{gf:>7.1f}{t_s * 1e3:>10.1f}{comp[0]}"
                      f"{t_o * 1e3:>9.1f}{gf / t_s:>11.0f}{comp[1]}{gf / t_o:>10.0f}"
                      f"{t_s / t_o:>8.2f}x{comp[2]}", flush=True)
    print(f"# 1-min load average {load_average()} at the end")


if __name__ == "__main__":
    main()
