"""Per-video agents on Ray: videos per hour against the number of workers, Ray's overhead
against the sequential loop, and an estimate for larger clusters from the measured cost.

The same per-video job on every row (`sam2rl-fast train` in per-video mode: features, the
headroom check, PPO, the agent's evaluation against sam2, samurai and dam4sam on its video):

- sequential: `run_training` without Ray, one torch thread (as a 1-CPU task);
- ray, W workers: `rl.ray.fleet.run_fleet` on a local Ray of W CPUs (one task per CPU),
  the Ray start timed apart; the agents are checked equal to the sequential ones.

    python benchmarks/bench_ray.py [--videos 4] [--workers 1 2] [--frames 12] [--steps 80]

Larger clusters are not measured here: their rate is estimated as W workers over the
measured per-video seconds on one worker (Ray's overhead included), and labelled so.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _timing import cpu_info


def load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def same_agents(a: Path, b: Path) -> bool:
    import torch

    from sam2rl_fast.rl.agents import load_sb3

    for za in sorted(a.glob("*.zip")):
        pa, _ = load_sb3(za)
        pb, _ = load_sb3(b / za.name)
        if not all(torch.equal(x, y) for x, y in zip(pa.policy.state_dict().values(),
                                                     pb.policy.state_dict().values())):
            return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=80, help="PPO environment steps per agent")
    ap.add_argument("--estimate", type=int, nargs="+", default=[8, 32, 128, 512],
                    help="cluster sizes (workers) to estimate")
    args = ap.parse_args(argv)

    import ray
    import torch

    from sam2rl_fast.rl.ray import RayOptions, session
    from sam2rl_fast.rl.ray.fleet import run_fleet
    from sam2rl_fast.rl.training import TrainConfig, run_training

    torch.set_num_threads(1)
    cfg = dict(mode="per-video", suites=["occlusion"], split="heldout", num_videos=args.videos,
               num_frames=args.frames, size=args.size, num_envs=4, total_steps=args.steps, n_steps=10,
               batch_size=40, n_epochs=2, checkpoint_every=args.steps, eval_videos=1, reward="improvement")
    print(f"# {cpu_info()}, {os.cpu_count()} cores, torch {torch.__version__}, ray {ray.__version__}, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"# load average at start {load()}: this CPU is SHARED with a background training job, so "
          "the times below are slower than on an idle machine and 2 workers compete with it")
    print(f"# per-video job: {args.videos} occlusion videos, {args.frames} frames at {args.size} px, "
          f"{args.steps} PPO steps, headroom check, evaluation vs 3 rules; 1 torch thread per worker\n")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows = []
    try:
        t0 = time.perf_counter()
        run_training(TrainConfig(**cfg), tmp / "seq", progress=False, log=lambda m: None)
        seq = time.perf_counter() - t0
        rows.append(("sequential loop", 0, 0.0, seq, None, True))
        for w in args.workers:
            t0 = time.perf_counter()
            with session(RayOptions(num_cpus=w), log=lambda m: None):
                start = time.perf_counter() - t0
                t1 = time.perf_counter()
                run_fleet(TrainConfig(**cfg), tmp / f"ray{w}", RayOptions(), progress=False,
                          log=lambda m: None)
                wall = time.perf_counter() - t1
            with open(tmp / f"ray{w}" / "fleet.csv", newline="") as fh:
                task_s = [float(r["seconds"]) for r in csv.DictReader(fh)]
            rows.append((f"ray, {w} worker(s)", w, start, wall, sum(task_s) / len(task_s),
                         same_agents(tmp / "seq", tmp / f"ray{w}")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.videos
    print(f"{'run':<20}{'workers':>8}{'ray start s':>12}{'wall s':>9}{'s/video':>9}{'videos/h':>10}"
          f"{'vs seq':>8}{'task s':>8}{'= seq':>7}")
    for name, w, start, wall, task, same in rows:
        print(f"{name:<20}{w or '-':>8}{start:>12.1f}{wall:>9.1f}{wall / n:>9.1f}{3600 * n / wall:>10.0f}"
              f"{seq / wall:>7.2f}x{task if task is not None else float('nan'):>8.1f}{str(same):>7}")
    one = next((r for r in rows if r[1] == 1), None)
    if one is not None:
        per_video_seq = seq / n
        overhead = one[3] / n - per_video_seq
        print(f"\nRay's overhead, 1 worker: {overhead:+.1f} s per video ({one[3] / seq - 1:+.0%} of the "
              f"sequential loop), plus {one[2]:.1f} s to start Ray; a task's own time {one[4]:.1f} s "
              f"against {per_video_seq:.1f} s per video in the loop (which builds the model once)")
        cost = one[3] / n  # per-video seconds on one worker, Ray's overhead included
        print(f"\nESTIMATE (not measured: from the measured {cost:.1f} s per video on one worker, "
              "assuming one task per worker, no contention and a driver that keeps up):")
        for w in args.estimate:
            print(f"  {w:>4} workers: ~{3600 * w / cost:,.0f} videos/h "
                  f"(SA-V's ~50,900 videos in ~{50_900 * cost / w / 3600:,.1f} h at this job size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
