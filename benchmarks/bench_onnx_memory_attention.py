"""Exported ONNX memory attention (onnxruntime) vs stock sam2 eager and FastMemoryAttention.

All three run the same random-weight tiny model (sam2.1 config) on the same float32
inputs; each size is exported once to a temporary file and reused for every memory-frame
count. Outputs are checked against stock before anything is timed. onnxruntime uses the
CUDA provider when it and a CUDA device are present, else the CPU (the header says which),
with as many intra-op threads as torch uses. The runner feeds numpy arrays, so on CUDA
its times include the host<->device copies of inputs and output.

    python benchmarks/bench_onnx_memory_attention.py --sizes 256 512 1024 --frames 1 7
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _timing import (
    device_name,
    load_average,
    time_interleaved,
)
from sam2rl_fast import FastMemoryAttention
from sam2rl_fast.export.memory_attention import OnnxMemoryAttention, export_memory_attention
from sam2rl_fast.runtime.onnx_session import default_providers
from sam2rl_fast.testing import build_random_predictor, memory_attention_inputs, rel_err


def _call(fn, inputs, n_ptr):
    return lambda: fn(*inputs, num_obj_ptr_tokens=n_ptr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    default="cuda" if torch.cuda.is_available() else "cpu",
                    help="device of the torch modules (onnxruntime picks CUDA when present)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 7], help="memory frames")
    ap.add_argument("--batch", type=int, default=1, help="objects B")
    ap.add_argument("--ptrs", type=int, default=16, help="object pointers (x4 tokens)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    dev = args.device
    providers = default_providers() if dev == "cuda" else ["CPUExecutionProvider"]
    n_ptr, B = 4 * args.ptrs, args.batch
    header = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            side = size // 16
            predictor = build_random_predictor("sam2.1", size)
            path = export_memory_attention(predictor, Path(tmp) / f"ma{size}.onnx")
            stock = predictor.memory_attention.eval().to(dev)
            fast = FastMemoryAttention.from_sam2(stock)
            ort_ma = OnnxMemoryAttention(path, providers=providers,
                                         threads=torch.get_num_threads())
            if header is None:
                header = (f"# torch device {dev} ({device_name(dev)}), float32, torch "
                          f"{torch.__version__}, threads {torch.get_num_threads()}; onnxruntime "
                          f"provider {ort_ma.provider}; B={B}, {args.ptrs} object pointers; "
                          f"median of {args.reps} (taking turns); 1-min load average "
                          f"{load_average()} at start")
                print(header)
                print(f"{'img':>5}{'mem':>4}{'M':>7}{'stock ms':>10}{'ours ms':>9}{'onnx ms':>9}"
                      f"{'onnx err':>10}{'stock/onnx':>11}{'ours/onnx':>10}", flush=True)
            for n_mem in args.frames:
                inputs = memory_attention_inputs(side, B, n_mem, n_ptr, device=dev)
                M = inputs[1].shape[0]
                fns = {name: _call(fn, inputs, n_ptr)
                       for name, fn in (("stock", stock), ("ours", fast), ("onnx", ort_ma))}
                with torch.no_grad():
                    ref = fns["stock"]().float().cpu()
                    err = rel_err(torch.from_numpy(fns["onnx"]()), ref)
                    err_ours = rel_err(fns["ours"]().float().cpu(), ref)
                    if max(err, err_ours) > 1e-4:
                        raise SystemExit(f"disagreement with stock at {size} px, {n_mem} frames: "
                                         f"onnx {err:.2e}, ours {err_ours:.2e}")
                    t = time_interleaved(fns, dev, args.reps, args.warmup)
                print(f"{size:>5}{n_mem:>4}{M:>7}{t['stock'] * 1e3:>10.1f}{t['ours'] * 1e3:>9.1f}"
                      f"{t['onnx'] * 1e3:>9.1f}{err:>10.1e}{t['stock'] / t['onnx']:>10.2f}x"
                      f"{t['ours'] / t['onnx']:>9.2f}x", flush=True)
    print(f"# ratios > 1 mean onnxruntime is faster; 1-min load average {load_average()} at the end")


if __name__ == "__main__":
    main()
