"""The Ray side of `sam2rl-fast train --ray` and `sam2rl-fast eval --ray` (`sam2rl_fast.cli`
loads it only with --ray: Ray and the training stack stay out of every other command)."""

from __future__ import annotations

import sys

from sam2rl_fast.rl.ray import RayOptions, check_device
from sam2rl_fast.rl.ray import evaluate as ray_eval
from sam2rl_fast.rl.ray.fleet import run_fleet  # noqa: F401  (`sam2rl-fast train --ray`)


def options(args) -> RayOptions:
    """--ray [ADDRESS] and --ray-gpus; every task takes one CPU."""
    opts = RayOptions(address=args.ray or None, cpus=1.0, gpus=args.ray_gpus)
    check_device(getattr(args, "device", None), opts)
    return opts


def model(args):
    """The model, built on the CPU for the object store: each worker moves it to --device."""
    from sam2rl_fast.model.loading import build_model

    return build_model(args.model, config=args.config, device="cpu", image_size=args.image_size)


def eval_suites(args, model, suites, agents):
    """`evaluate_agents` of `sam2rl-fast eval`, a task per video: (scores, failures)."""
    return ray_eval.on_ray(options(args), model, ray_eval.evaluate_suites, suites, agents, split=args.split,
                           num_videos=args.videos, num_frames=args.frames, size=args.size,
                           device=args.device, progress=not args.quiet)


def eval_dataset(args, model, dataset, agents, out, names):
    """`evaluate_dataset` of `sam2rl-fast eval --dataset`, a task per video: (runs, failures)."""
    return ray_eval.on_ray(options(args), model, ray_eval.evaluate_dataset, dataset, agents, out,
                           names=names, device=args.device, progress=not args.quiet)


def failed(failures: dict) -> int:
    """Name the failed videos (the others' results are written); the exit status."""
    print(f"error: {len(failures)} video(s) failed (the others' results are written): "
          + "; ".join(f"{k}: {v}" for k, v in failures.items()), file=sys.stderr)
    return 1
