"""End-to-end tracking speed and memory: FastTracker(agent="sam2") vs stock SAM2VideoPredictor.

Same random-weight model, same JPEG video and mask prompts, same process. Stock time is
`propagate_in_video` alone (its frame loading and frame-0 features in `init_state` are not
counted); "ours fps" counts frames 1.. without JPEG decode and resize (stock did those in
`init_state`), "e2e fps" with them (we stream: frames are decoded as they are tracked).
Masks are checked to agree (mean IoU) before the times are trusted.

    python benchmarks/bench_tracker.py [--device cuda] [--sizes 256 512] [--objects 1 4]
        [--frames 12] [--lengths 100 1000] [--vos] [--bf16]

`--bf16` adds the whole job (frame decoding, resizing and frame 0 included: stock's
`init_state` + `propagate_in_video`, our `run()`) for stock fp32, stock under
`torch.autocast("cpu", dtype=torch.bfloat16)` (what a user tries first) and ours with
`precision="bf16"`, with our masks' IoU against stock fp32.

`--lengths` measures what each tracker holds after N frames at 256 px (stock: its
inference state, which keeps every frame's outputs and the whole resized video; ours:
the memory bank, preallocated). `--vos` also times stock with `vos_optimized=True`
(torch.compile of every component; CUDA only in practice: compiling on a CPU takes long).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _timing import device_name
from sam2rl_fast import FastTracker
from sam2rl_fast.testing import (
    SAM2_CONFIGS,
    build_random_predictor,
    moving_square_video,
    shift_object_scores,
    write_jpeg_folder,
)


def build(config, size, device, vos=False):
    # Random weights: keep the object present so that the masks compared are real.
    return shift_object_scores(build_random_predictor(config, size, device=device, vos_optimized=vos), 20.0)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_stock_job(p, folder, masks, device, bf16=False):
    """Seconds for the whole stock job: decode + resize (init_state), prompts, propagation."""
    sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        _, m, _ = run_stock(p, folder, masks, device)
    sync(device)
    return time.perf_counter() - t0, m


def run_stock(p, folder, masks, device):
    state = p.init_state(folder)
    for k in range(masks.shape[1]):
        p.add_new_mask(state, 0, k, masks[0, k])
    sync(device)
    t0 = time.perf_counter()
    out = {f: (m > 0).cpu().numpy()[:, 0] for f, _, m in p.propagate_in_video(state)}
    sync(device)
    return time.perf_counter() - t0, np.stack([out[f] for f in sorted(out)]), state


def run_ours(p, video, masks, device, fast=None, profile=None, precision="fp32"):
    tr = FastTracker(video, model=p, prompt={k: masks[0, k] for k in range(masks.shape[1])},
                     fast_attention=fast, profile=profile, precision=precision)
    sync(device)
    t0 = time.perf_counter()
    res = tr.run()
    sync(device)
    return time.perf_counter() - t0, res, tr


def mean_iou(a, b):
    inter, union = (a & b).sum((-2, -1)), (a | b).sum((-2, -1))
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def state_bytes(obj) -> int:
    """Bytes of the distinct tensors reachable from a (nested) inference state."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            key = (x.untyped_storage().data_ptr(), x.device)
            if key not in seen:
                seen.add(key)
                total += x.untyped_storage().nbytes()
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default="sam2.1", choices=sorted(SAM2_CONFIGS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--lengths", type=int, nargs="*", default=[])
    ap.add_argument("--vos", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also the whole job in bf16 (see above)")
    args = ap.parse_args()
    dev = args.device
    name = device_name(dev)
    print(f"# device: {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.config} tiny, random weights, {args.frames} frames, mask prompts")
    tmp = Path(tempfile.mkdtemp())
    print(f"{'img':>5}{'obj':>4}{'stock fps':>11}{'ours fps':>10}{'speed-up':>10}{'e2e fps':>9}{'IoU':>7}  attention"
          + ("   vos fps  ours/vos" if args.vos else ""))
    profiles, jobs = {}, []
    for size in args.sizes:
        p = build(args.config, size, dev)
        for n in args.objects:
            frames, masks = moving_square_video(args.frames, n_obj=n, seed=n)
            folder = write_jpeg_folder(frames, tmp / f"v{size}_{n}")
            # Warm-up on the same video: oneDNN builds (JIT) its kernels per shape on first
            # use, and the memory length grows over the first 7 frames.
            run_ours(p, folder, masks, dev)
            t_s, m_s, _ = run_stock(p, folder, masks, dev)
            _, res, tr = run_ours(p, folder, masks, dev)  # the same decoded JPEGs as stock
            T = args.frames - 1
            # Stock decodes and resizes every frame in init_state, before propagate_in_video
            # (not timed), and computes frame 0's features there: time ours on frames 1.. and
            # without decode + resize ("ours fps", like for like); "e2e" includes them. On a
            # GPU frames are timed whole (no per-stage syncs), resize included: conservative.
            per = {k: v[res.tracked][1:].sum() / 1e3 for k, v in res.timings.items()}
            t_o = sum(v for k, v in per.items() if k not in ("decode", "preprocess"))
            fps_s, fps_o, fps_e2e = T / t_s, T / t_o, T / sum(per.values())
            line = (f"{size:>5}{n:>4}{fps_s:>11.2f}{fps_o:>10.2f}{fps_o / fps_s:>9.2f}x{fps_e2e:>9.2f}"
                    f"{mean_iou(res.masks, m_s):>7.3f}  {tr.attention_impl}")
            if args.vos:
                pv = build(args.config, size, dev, vos=True)
                run_stock(pv, folder, masks, dev)  # compile
                t_v, _, _ = run_stock(pv, folder, masks, dev)
                line += f"{T / t_v:>10.2f}{fps_o / (T / t_v):>9.2f}x"
            print(line, flush=True)
            if args.bf16:
                run_ours(p, folder, masks, dev, precision="bf16")  # warm-up (oneDNN's bf16 kernels)
                run_stock_job(p, folder, masks, dev, bf16=True)
                t_f32, m_f32 = run_stock_job(p, folder, masks, dev)
                t_b16, _ = run_stock_job(p, folder, masks, dev, bf16=True)
                t_ours, res_b, _ = run_ours(p, folder, masks, dev, precision="bf16")
                jobs.append((size, n, t_f32, t_b16, t_ours, mean_iou(res_b.masks, m_f32)))
            if dev == "cuda":  # the stage profile needs a run with per-stage syncs
                _, res, _ = run_ours(p, folder, masks, dev, profile=True)
            profiles[(size, n)] = {k: float(v[res.tracked][1:].mean()) for k, v in res.timings.items()
                                   if k != "frame"}
    print("\n# where our time goes (ms per frame, tracked frames after the prompt)")
    stages = list(next(iter(profiles.values())))
    print(f"{'img':>5}{'obj':>4}" + "".join(f"{s:>18}" for s in stages))
    for (size, n), prof in profiles.items():
        print(f"{size:>5}{n:>4}" + "".join(f"{prof[s]:>18.1f}" for s in stages))
    if jobs:
        print(f"\n# whole job ({args.frames} frames, decoding included): stock fp32, stock under bf16 "
              "autocast, ours precision='bf16' (IoU: ours bf16 vs stock fp32)")
        print(f"{'img':>5}{'obj':>4}{'stock fp32 s':>14}{'stock bf16 s':>14}{'ours bf16 s':>13}"
              f"{'vs fp32':>9}{'vs bf16':>9}{'IoU':>7}")
        for size, n, a, b, c, iou in jobs:
            print(f"{size:>5}{n:>4}{a:>14.2f}{b:>14.2f}{c:>13.2f}{a / c:>8.2f}x{b / c:>8.2f}x{iou:>7.3f}")
    if args.lengths:
        print("\n# memory held after N frames (256 px, 1 object): stock inference state vs our bank")
        print(f"{'frames':>7}{'stock MiB':>11}{'ours MiB':>10}")
        p = build(args.config, 256, dev)
        for L in args.lengths:
            frames, masks = moving_square_video(L, H=96, W=128, n_obj=1, seed=L)
            folder = write_jpeg_folder(frames, tmp / f"len{L}")
            _, _, state = run_stock(p, folder, masks, dev)
            _, _, tr = run_ours(p, folder, masks, dev)
            print(f"{L:>7}{state_bytes(state) / 2**20:>11.1f}{tr.bank.nbytes / 2**20:>10.2f}", flush=True)
            del state


if __name__ == "__main__":
    main()
