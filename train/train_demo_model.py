#!/usr/bin/env python
"""Train sam2rl-fast's bundled model (SAM 2.1 at 256 px on a pretrained EfficientNet-Lite0).

    python train/train_demo_model.py --run runs/effnet256 --steps 4000 --minutes 100
    python train/train_demo_model.py --run runs/effnet256 --steps 4000 --resume   # continue

A run folder holds config.json, state.pt (weights, optimizer, curve: checkpointed every
--checkpoint-minutes, on Ctrl-C / SIGTERM and at the end), model.pt (the shippable
checkpoint), curve.csv, loss.png and, once all steps are done, eval.json (held-out J per
suite). --resume continues exactly (same weights as an uninterrupted run), also on another
machine; it refuses options that differ from the run's. See docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# runnable from a checkout without installing: train/ and the repository root on the path
_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

from demo_trainer.run import DemoTrainConfig, RunError, train  # noqa: E402


def _weights(p, opt: str, text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (kv.split("=") for kv in text.split(","))}
    except ValueError:
        p.error(f"{opt}: expected name=weight,..., got {text!r}")


def parse_args(argv=None) -> tuple[Path, DemoTrainConfig, bool]:
    d = DemoTrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run folder (new, or the run to --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run")
    p.add_argument("--steps", type=int, default=d.steps, help="planned optimisation steps")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop (checkpointed) after this long; continue later with --resume")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes making batches ahead (a GPU needs many: ~100 frames/s each)")
    p.add_argument("--batch", type=int, default=d.batch, help="clips per step")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per clip")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--box-prob", type=float, default=d.box_prob,
                   help="share of batches whose frame 0 is prompted with a box instead of the mask")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=d.precision,
                   help="auto: bf16 autocast on GPUs and on CPUs with AVX512-BF16/AMX")
    p.add_argument("--config", default=None, help="model YAML (default: the bundled model's)")
    p.add_argument("--init", default=None, help="warm start from this checkpoint (a second stage)")
    p.add_argument("--locality-init", default=None, metavar="BIAS[,SCALE]",
                   help="start the memory attention's cross-attention local: query/key biases "
                        "BIAS, their weights times SCALE (default 0.1); see "
                        "demo_trainer/memory_path.py")
    p.add_argument("--mask-gain", type=float, default=None, metavar="K",
                   help="amplify the memory encoder's mask path K times at the start "
                        "(demo_trainer/memory_path.py)")
    p.add_argument("--pointer-dropout", type=float, default=None, metavar="P",
                   help="track this share of batches without object pointers")
    p.add_argument("--suites", default=None,
                   help="training mix, e.g. 'drift=0.5,easy=0.5' (default: every suite)")
    p.add_argument("--schedules", default=None,
                   help="memory schedules, e.g. 'fifo=0.5,skip=0.5' (default: fifo, skip, evict, prompt-only)")
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-videos", type=int, default=d.eval_videos,
                   help="held-out videos per suite after the last step (0: skip)")
    p.add_argument("--eval-frames", type=int, default=d.eval_frames)
    a = p.parse_args(argv)
    if a.minutes is not None and a.minutes <= 0:
        p.error("--minutes must be > 0")
    if a.steps < 1 or a.batch < 1 or a.frames < 2:
        p.error("--steps and --batch must be >= 1 and --frames >= 2")
    if a.workers < 0:
        p.error("--workers must be >= 0")
    locality = None
    if a.locality_init:
        try:
            locality = [float(x) for x in a.locality_init.split(",")]
        except ValueError:
            p.error(f"--locality-init: expected BIAS[,SCALE], got {a.locality_init!r}")
        if len(locality) == 1:
            locality.append(0.1)
        if len(locality) != 2 or locality[1] <= 0:
            p.error(f"--locality-init: expected BIAS[,SCALE] with SCALE > 0, got {a.locality_init!r}")
    cfg = DemoTrainConfig(steps=a.steps, batch=a.batch, frames=a.frames, seed=a.seed, lr=a.lr,
                          weight_decay=a.weight_decay, warmup_steps=a.warmup_steps,
                          min_lr_ratio=a.min_lr_ratio, grad_clip=a.grad_clip, box_prob=a.box_prob,
                          precision=a.precision, config=a.config, init=a.init,
                          locality_init=locality, pointer_dropout=a.pointer_dropout,
                          mask_gain=a.mask_gain,
                          suite_weights=_weights(p, "--suites", a.suites),
                          schedule_weights=_weights(p, "--schedules", a.schedules),
                          minutes=a.minutes, device=a.device, workers=a.workers,
                          checkpoint_minutes=a.checkpoint_minutes, log_every=a.log_every,
                          eval_videos=a.eval_videos, eval_frames=a.eval_frames)
    return Path(a.run), cfg, a.resume


def main(argv=None) -> int:
    run, cfg, resume = parse_args(argv)
    try:
        result = train(run, cfg, resume=resume, log=lambda m: print(m, flush=True))
    except (RunError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
