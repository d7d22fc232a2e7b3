#!/usr/bin/env python
"""Train sam2rl-fast's demo model (a reduced SAM 2.1 at 256 px) on the synthetic videos.

    python train/train_demo_model.py --out sam2rl_fast/assets/demo_sam2.1_tiny256.pt \
        --minutes 4.5 --device cuda --batch 16 --seed 0

Writes the checkpoint ({"model": float16 state dict, "meta": {...}}, atomically), a JSON log
next to it (loss curve, throughput, held-out J per suite) and, when matplotlib is installed,
a PNG of the loss curve. Never replaces existing outputs without --overwrite.
See docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# runnable from a checkout without installing: the repository root goes first on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam2rl_fast.demo_training import TrainConfig, check_outputs_free, train  # noqa: E402


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--minutes", type=float, default=4.5,
                   help="wall-clock training budget (0 or less: no time limit, use --max-steps)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch", type=int, default=16, help="clips per step")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--box-prob", type=float, default=0.25,
                   help="share of batches whose frame 0 is prompted with a box instead of the mask")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading processes (default: CPU count - 2 on CUDA, 0 on CPU)")
    p.add_argument("--eval-videos", type=int, default=8, help="held-out videos per suite (0: skip)")
    p.add_argument("--eval-frames", type=int, default=24, help="frames per held-out video")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--config", default=None, help="model YAML (default: the packaged demo config)")
    p.add_argument("--init", default=None, help="warm start from this checkpoint (a second stage)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--suites", default=None,
                   help="training mix, e.g. 'distractor=0.5,mixed=0.3,easy=0.2' (default: the standard mix)")
    a = p.parse_args(argv)
    weights = None
    if a.suites:
        try:
            weights = {k: float(v) for k, v in (kv.split("=") for kv in a.suites.split(","))}
        except ValueError:
            p.error(f"--suites: expected suite=weight,..., got {a.suites!r}")
    minutes = a.minutes if a.minutes and a.minutes > 0 else None
    if minutes is None and a.max_steps is None:
        p.error("give --minutes > 0 and/or --max-steps")
    return TrainConfig(out=a.out, minutes=minutes, max_steps=a.max_steps, device=a.device,
                       batch=a.batch, frames=a.frames, seed=a.seed, lr=a.lr,
                       weight_decay=a.weight_decay, warmup_steps=a.warmup_steps,
                       grad_clip=a.grad_clip, box_prob=a.box_prob, workers=a.workers,
                       eval_videos=a.eval_videos, eval_frames=a.eval_frames,
                       log_every=a.log_every, overwrite=a.overwrite, config=a.config,
                       init=a.init, suite_weights=weights)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        check_outputs_free(cfg.out, cfg.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = train(cfg, log=lambda m: print(m, flush=True))
    summary = {k: result[k] for k in ("meta", "checkpoint_bytes", "steps_per_s")}
    if "heldout" in result:
        summary["heldout_J"] = {k: round(v["J"], 4) for k, v in result["heldout"].items()
                                if isinstance(v, dict)}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
