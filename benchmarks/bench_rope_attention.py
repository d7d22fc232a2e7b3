"""The fused `rope_attention` op vs stock sam2's cross-attention core, in one process.

Stock: sam2's complex-number `apply_rotary_enc` on q and the spatial keys (query table
tiled over memory frames) + `scaled_dot_product_attention` with its 256-d V. Ours: the
fused op on the raw 64-d memory as V (the exact PV shortcut). One object, 7 memories +
64 pointer tokens. FLOPs counted as 2*Nq*M*(256 + Dv) with each side's own Dv.

    python benchmarks/bench_rope_attention.py [--device cuda] [--sizes 256 512 1024]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

from _timing import median_time
from sam2rl_fast.ops import rope_attention


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--memories", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    dev = args.device
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    print(f"# device {dev}, dtype {dt}, torch {torch.__version__}")
    print(f"{'img':>6}{'M':>8}{'stock ms':>11}{'ours ms':>11}{'stock TF/s':>12}{'ours TF/s':>11}{'ratio':>8}")
    for size in args.sizes:
        side = size // 16
        Nq, n_ptr = side * side, 64
        M = args.memories * Nq + n_ptr
        q = torch.randn(1, Nq, 256, device=dev, dtype=dt)
        k = torch.randn(1, M, 256, device=dev, dtype=dt)
        v64 = torch.randn(1, M, 64, device=dev, dtype=dt)
        v256 = torch.randn(1, 1, M, 256, device=dev, dtype=dt)
        cis = compute_axial_cis(256, side, side).to(dev)

        def stock():
            kk = k[:, None].clone()
            qr, kk[:, :, :M - n_ptr] = apply_rotary_enc(q[:, None], kk[:, :, :M - n_ptr], cis,
                                                        repeat_freqs_k=True)
            return F.scaled_dot_product_attention(qr, kk, v256)

        def ours():
            return rope_attention(q, k, v64, side, n_ptr)

        t_s, t_o = median_time(stock, dev, args.reps, warmup=1), median_time(ours, dev, args.reps, warmup=1)
        f_s, f_o = 2 * Nq * M * (256 + 256), 2 * Nq * M * (256 + 64)
        print(f"{size:>6}{M:>8}{t_s * 1e3:>11.2f}{t_o * 1e3:>11.2f}{f_s / t_s / 1e12:>12.3f}"
              f"{f_o / t_o / 1e12:>11.3f}{t_s / t_o:>7.2f}x")


if __name__ == "__main__":
    main()
