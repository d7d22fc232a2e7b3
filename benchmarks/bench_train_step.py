"""Demo-model training steps per second: fp32 against bf16 autocast, same code as the trainer.

`train/demo_trainer.run.train_step` (forward over the clip with a random memory schedule,
loss, backward, clip, AdamW) on the same batches of the training data, once in fp32 and
once under `torch.autocast(dtype=torch.bfloat16)`, in the same process. Printed as
frames/s (batch x clip frames per step) and their ratio; the first steps are warm-up.

    python benchmarks/bench_train_step.py [--steps 4] [--batch 4] [--frames 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

# the trainer lives outside the package, in train/ (where its own scripts find it too)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from demo_trainer.data import ClipDataset, batch_at  # noqa: E402
from demo_trainer.run import DemoTrainConfig, build_demo_model, make_optimizer, train_step  # noqa: E402

from _timing import device_name  # noqa: E402


def time_steps(device: torch.device, cfg: DemoTrainConfig, amp: bool, steps: int, warmup: int):
    with warnings.catch_warnings():  # fresh weights on the ImageNet trunk, as the trainer starts
        warnings.simplefilter("ignore")
        model = build_demo_model(device, cfg.config, seed=0)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    data = ClipDataset(seed=0, num_frames=cfg.frames)
    batches = [batch_at(data, s, cfg.batch) for s in range(warmup + steps)]  # data time excluded
    times, losses = [], []
    for s, batch in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = train_step(model, opt, batch, device, s, cfg, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(out["loss"])
    return sorted(times)[len(times) // 2], losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    cfg = DemoTrainConfig(batch=a.batch, frames=a.frames)
    print(f"# demo-model training step ({device_name(a.device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads): batch {a.batch} x {a.frames} frames at 256 px, "
          f"median of {a.steps} steps after {a.warmup} warm-up")
    rows = {}
    for name, amp in (("fp32", False), ("bf16 autocast", True)):
        sec, losses = time_steps(device, cfg, amp, a.steps, a.warmup)
        rows[name] = sec
        fps = a.batch * a.frames / sec
        print(f"  {name:14s} {sec:7.2f} s/step  {fps:6.1f} frames/s  "
              f"losses {', '.join(f'{x:.3f}' for x in losses)}")
    print(f"  bf16 autocast vs fp32: {rows['fp32'] / rows['bf16 autocast']:.2f}x")


if __name__ == "__main__":
    main()
