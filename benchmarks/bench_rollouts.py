"""Environment steps per second: the fast rollout path against the naive one.

Same model (the bundled demo model, 256 px), same synthetic video, same random decisions.

- fast: `MemoryControlVecEnv` - backbone features cached once per video, N episodes
  stepped as one batch through sam2rl-fast's memory attention and oneDNN linears;
- naive: what an environment built on stock sam2 does - the image encoder runs on every
  step, one episode at a time, stock MemoryAttention, eager linears (the same decision
  and reward code, so the two produce the same rewards: checked below);
- stock propagate: `SAM2VideoPredictor.propagate_in_video` frames per second on the same
  video (a stock-predictor environment cannot step faster than it tracks).

    python benchmarks/bench_rollouts.py [--lanes 1 8 16 32] [--frames 24] [--device cpu]
        [--model sam2.1_hiera_t]   # random weights at 256 px: Meta's tiny architecture
        [--bf16]                   # also the fast path under bf16 autocast

The rate ratio depends on the model: the cache saves the image encoder, batching the
per-lane overheads; the memory-conditioned part is paid on both paths. So each row also
prints the arithmetic it sustains: the FLOPs of one lane-step (memory attention, SAM heads,
memory encoder; the image encoder's once per frame on the naive path), counted on the stock
modules (`_timing.count_flops`), times its rate; and the rate that 10x the naive one would
need, against the CPU's measured matrix-product peak (RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _timing import count_flops, device_name
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl import EpisodeBatch, EpisodeVideo, FeatureCache, Lane
from sam2rl_fast.tracking.step import TrackingStep
from sam2rl_fast.testing import write_jpeg_folder


class EncodeEveryStep:
    """Stands in for cached features: runs the image encoder whenever a frame is asked for."""

    def __init__(self, frames, model):
        self.video, self.step = frames, TrackingStep(model, None)
        self.num_frames = len(frames)

    def frames(self, idx):
        assert len(idx) == 1, "the naive path steps one episode at a time"
        return self.step.encode_image(self.video[idx[0]])


def run_episodes(batch: EpisodeBatch, lanes, actions) -> tuple[float, np.ndarray]:
    """Seconds for the episodes' steps (reset included) and their rewards [steps, N]."""
    t0 = time.perf_counter()
    batch.reset(lanes)
    rewards = [batch.step(a)[1] for a in actions]
    return time.perf_counter() - t0, np.stack(rewards)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--naive-episodes", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="checkpoint or config (default: the bundled demo model)")
    ap.add_argument("--bf16", action="store_true", help="also the fast path with precision='bf16'")
    args = ap.parse_args(argv)

    model = build_model(args.model, device=args.device, image_size=256 if args.model else None)
    name = args.model or "demo model"
    v = generate_video("occlusion", 1_000_000, num_frames=args.frames, height=256, width=256)
    steps = args.frames - 2
    rng = np.random.default_rng(0)
    print(f"# {device_name(args.device)}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}, {name} 256 px, "
          f"{args.frames}-frame episodes ({steps} decisions), {time.strftime('%Y-%m-%d')}")

    t0 = time.perf_counter()
    feats = FeatureCache(model, progress=False).get(v.frames)
    cache_s = time.perf_counter() - t0
    print(f"feature cache: {cache_s:.2f} s for {args.frames} frames "
          f"({feats.nbytes / 2**20:.1f} MiB), once per video")

    # FLOPs of a lane-step, on the stock modules (the counter sees through neither our kernels
    # nor oneDNN's packed linears): 8 lanes, steps 5..9 of random decisions
    work = EpisodeBatch([EpisodeVideo(v.masks, feats, "v")], model, 8, reward="iou",
                        fast_attention=False, fast_linears=False)
    wa = np.random.default_rng(1).integers(0, 8, (10, 8))
    work.reset([Lane(0, 0, 0)] * 8)
    for x in wa[:5]:
        work.step(x)
    counted, attention = count_flops(lambda: [work.step(x) for x in wa[5:]])
    work.close()
    lane_steps = wa[5:].size
    step_flops = (counted + attention) / lane_steps
    enc_counted, enc_attention = count_flops(lambda: FeatureCache(model, progress=False).get(v.frames[:2]))
    enc_flops = (enc_counted + enc_attention) / 2
    print(f"work: {step_flops / 1e9:.3f} GFLOP a lane-step ({attention / lane_steps / 1e9:.3f} of it attention), "
          f"image encoder {enc_flops / 1e9:.3f} GFLOP a frame")

    # naive: one episode at a time, image encoder every step, stock attention, eager linears
    naive = EpisodeBatch([EpisodeVideo(v.masks, EncodeEveryStep(v.frames, model), "v")], model, 1,
                         reward="iou", fast_attention=False, fast_linears=False)
    acts = rng.integers(0, 8, (args.naive_episodes, steps, 1))
    run_episodes(naive, [Lane(0, 0, 0)], acts[0][:3])  # warm-up
    secs, naive_r = 0.0, []
    for e in range(args.naive_episodes):
        s, r = run_episodes(naive, [Lane(0, 0, 0)], acts[e])
        secs += s
        naive_r.append(r[:, 0])
    naive.close()
    naive_rate = args.naive_episodes * steps / secs
    print(f"10x naive needs {10 * naive_rate:.0f} lane-steps/s: "
          f"{10 * naive_rate * step_flops / 1e9:.0f} GFLOP/s of this work")
    print(f"\n{'path':<34}{'lanes':>6}{'steps/s':>10}{'vs naive':>10}{'max |dr|':>10}{'GFLOP/s':>9}")
    print(f"{'naive (stock modules, no cache)':<34}{1:>6}{naive_rate:>10.1f}{1.0:>9.2f}x{'-':>10}"
          f"{naive_rate * (step_flops + enc_flops) / 1e9:>9.0f}")

    fast_video = [EpisodeVideo(v.masks, feats, "v")]
    for n in args.lanes:
        fast = EpisodeBatch(fast_video, model, n, reward="iou")
        a = rng.integers(0, 8, (steps, n))
        a[:, 0] = acts[0][:, 0]  # lane 0 repeats the naive run's first episode
        run_episodes(fast, [Lane(0, 0, 0)] * n, a[:3])  # warm-up
        s, r = run_episodes(fast, [Lane(0, 0, 0)] * n, a)
        fast.close()
        rate = n * steps / s
        diff = float(np.abs(r[:, 0] - naive_r[0]).max())
        print(f"{'fast (cached, batched)':<34}{n:>6}{rate:>10.1f}{rate / naive_rate:>9.2f}x{diff:>10.1e}"
              f"{rate * step_flops / 1e9:>9.0f}")
        if args.bf16:  # the same episodes under bf16 autocast (rewards differ by rounding)
            fast = EpisodeBatch(fast_video, model, n, reward="iou", precision="bf16")
            run_episodes(fast, [Lane(0, 0, 0)] * n, a[:3])
            s, r = run_episodes(fast, [Lane(0, 0, 0)] * n, a)
            fast.close()
            rate = n * steps / s
            diff = float(np.abs(r[:, 0] - naive_r[0]).max())
            print(f"{'fast, precision bf16':<34}{n:>6}{rate:>10.1f}{rate / naive_rate:>9.2f}x{diff:>10.1e}"
                  f"{rate * step_flops / 1e9:>9.0f}")

    # stock propagate_in_video on the same video (JPEG folder, as sam2 reads videos)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpeg_folder(v.frames, Path(tmp))
        state = model.init_state(str(folder))
        model.add_new_mask(state, 0, 0, v.masks[0, 0])
        t0 = time.perf_counter()
        with torch.inference_mode():
            n = sum(1 for _ in model.propagate_in_video(state))
        rate = (n - 1) / (time.perf_counter() - t0)
    print(f"{'stock propagate_in_video (fps)':<34}{1:>6}{rate:>10.1f}{rate / naive_rate:>9.2f}x{'-':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
