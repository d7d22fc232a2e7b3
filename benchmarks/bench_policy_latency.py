"""Per-decision latency of a memory-control agent: exported ONNX (onnxruntime) vs SB3 (torch).

Times one policy call on a batch of B observation vectors (B objects tracked at once):
`OnnxPolicy.predict` (what the tracker calls for an `.onnx` agent: input check, one
`session.run`) against stable-baselines3's `predict(obs, deterministic=True)` (what it
calls for a `.zip`). The two take turns in blocks of calls, so that load from other
processes hits both alike; p50 and p99 are over every timed call after warm-up. Actions
are checked to be equal before anything is timed.

Without an agent file a tiny one is trained first (~10 s, a few hundred PPO steps: its
weights differ from a real agent's, its network and so its latency do not).

    python benchmarks/bench_policy_latency.py                      # tiny agent, B = 1 and 32
    python benchmarks/bench_policy_latency.py runs/agent/agent.zip --batches 1 4 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _timing import device_name, load_average
from sam2rl_fast.export.agent import OnnxPolicy, export_agent
from sam2rl_fast.rl.agents import load_sb3


def tiny_agent(out: Path) -> Path:
    from sam2rl_fast.rl.training import TrainConfig, run_training

    cfg = TrainConfig(mode="per-video", suites=["occlusion"], split="heldout", num_videos=1,
                      num_envs=8, total_steps=8 * 22 * 3, n_steps=22, batch_size=88, n_epochs=2,
                      checkpoint_every=0)
    return run_training(cfg, out, progress=False, log=lambda *a: None)[0]


def time_calls(fns: dict, reps: int, warmup: int, block: int = 50) -> dict:
    """Seconds of every timed call of each fn; the fns take turns in blocks of `block` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    clock = time.perf_counter
    done = 0
    while done < reps:
        n = min(block, reps - done)
        for name, fn in fns.items():
            out = times[name]
            for _ in range(n):
                t0 = clock()
                fn()
                out.append(clock() - t0)
        done += n
    return {name: np.asarray(t) for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("agent", nargs="?", help="agent .zip (default: train a tiny one)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="objects per call")
    ap.add_argument("--reps", type=int, default=5000, help="timed calls per batch size and runner")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--providers", nargs="+", default=None,
                    help="onnxruntime providers (default: CUDA when usable, else CPU)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        agent_zip = Path(args.agent) if args.agent else tiny_agent(tmp / "tiny")
        onnx_path = export_agent(agent_zip, tmp / "agent.onnx")
        ppo, meta = load_sb3(agent_zip)
        pol = OnnxPolicy(onnx_path, providers=args.providers, threads=args.ort_threads)
        print(f"# agent {agent_zip.name if args.agent else '(tiny, trained now)'}: "
              f"{meta['capacity']} slots, obs_size {meta['obs_size']}; CPU {device_name('cpu')}, "
              f"{len(os.sched_getaffinity(0))} cores; torch {torch.__version__} "
              f"threads {torch.get_num_threads()}; onnxruntime provider {pol.provider}, "
              f"intra-op threads {args.ort_threads}; {args.reps} timed calls each after "
              f"{args.warmup} warm-up; 1-min load average {load_average()} at start")
        print(f"{'B':>4}{'sb3 p50 us':>12}{'sb3 p99 us':>12}{'onnx p50 us':>13}{'onnx p99 us':>13}"
              f"{'p50 ratio':>11}{'onnx us/decision':>18}", flush=True)
        rng = np.random.default_rng(0)
        for B in args.batches:
            obs = rng.uniform(0.0, 1.0, (B, meta["obs_size"])).astype(np.float32)
            want = ppo.predict(obs, deterministic=True)[0]
            got = pol.predict(obs)
            if not np.array_equal(want, got):
                raise SystemExit(f"B={B}: ONNX actions {got} differ from SB3 {want}")
            t = time_calls({"sb3": lambda obs=obs: ppo.predict(obs, deterministic=True),
                            "onnx": lambda obs=obs: pol.predict(obs)}, args.reps, args.warmup)
            p = {k: (np.percentile(v, 50) * 1e6, np.percentile(v, 99) * 1e6) for k, v in t.items()}
            print(f"{B:>4}{p['sb3'][0]:>12.1f}{p['sb3'][1]:>12.1f}{p['onnx'][0]:>13.1f}"
                  f"{p['onnx'][1]:>13.1f}{p['sb3'][0] / p['onnx'][0]:>10.1f}x"
                  f"{p['onnx'][0] / B:>18.2f}", flush=True)
        print(f"# load average {load_average()} at end")


if __name__ == "__main__":
    main()
