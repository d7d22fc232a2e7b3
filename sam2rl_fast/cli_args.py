"""The `sam2rl-fast` command line's arguments: one parser per subcommand (`cli.py` runs them)."""

from __future__ import annotations

import argparse


class UsageError(ValueError):
    """A user error found by the command line: one line on stderr, exit status 2."""


def add_precision_arg(p):
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default, exact against stock) or bf16 (autocast, as SAM 2 on GPUs)")


def add_model_args(p):
    p.add_argument("--model", default=None, help="SAM 2 checkpoint, Hugging Face id (facebook/sam2.1-hiera-tiny, "
                   "from the HF cache) or config name (default: bundled demo model)")
    p.add_argument("--config", default=None, help="config of the checkpoint (default: inferred)")
    p.add_argument("--image-size", type=int, default=None, help="model input size override")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")


def build_parser(handlers: dict, description: str) -> argparse.ArgumentParser:
    """The parser of every subcommand; `handlers` maps info, track, eval, demo and train to
    the functions that run them (`args.func`); the export commands bring their own."""
    parser = argparse.ArgumentParser(prog="sam2rl-fast", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="how the extension was built and whether a GPU is usable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=handlers["info"])

    p = sub.add_parser("track", help="track objects through a video")
    p.add_argument("video", help="video file, folder of JPEG/PNG frames")
    p.add_argument("--box", action="append", help="x0,y0,x1,y1 in pixels (one object each)")
    p.add_argument("--mask", action="append", help="PNG mask (an indexed PNG: one object per value)")
    p.add_argument("--points", action="append", help="'x,y,label;x,y,label' (label 1 object, 0 background)")
    p.add_argument("--frame", type=int, default=0, help="frame the prompts are on (default 0)")
    p.add_argument("--agent", default="sam2", help="sam2 | samurai | dam4sam | sam2long | sam2rl | agent file (.onnx, .zip)")
    add_model_args(p)
    add_precision_arg(p)
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handlers["track"])

    p = sub.add_parser("eval", help="compare agents on the synthetic suites or a dataset folder "
                                    "(J, F, J&F, FPS)")
    p.add_argument("--dataset", default=None,
                   help="dataset folder (DAVIS, MOSE, YouTube-VOS, LVOS or SA-V layout): score it as "
                        "the DAVIS 2017 toolkit does, instead of the synthetic suites")
    p.add_argument("--sequences", default=None, help="with --dataset: comma-separated videos to keep")
    p.add_argument("--resolution", default=None, help="with --dataset: DAVIS' 480p (default) or "
                                                      "Full-Resolution")
    p.add_argument("--suite", action="append", help="suite (repeatable; default: all)")
    p.add_argument("--agent", action="append", help="agent (repeatable; default: sam2, samurai, dam4sam, sam2long, and sam2rl where it ships)")
    p.add_argument("--split", default=None,
                   help="synthetic: heldout (default) or train; --dataset: a split file's name "
                        "(e.g. val for ImageSets/2017/val.txt; default: every annotated video)")
    p.add_argument("--videos", type=int, default=4, help="videos per suite")
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--size", type=int, default=256, help="video side in pixels (the demo model was trained at 256)")
    add_model_args(p)
    add_precision_arg(p)
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=handlers["eval"])

    p = sub.add_parser("demo", help="track a held-out synthetic video with every agent; overlay video + GIF")
    p.add_argument("--agent", action="append", help="agent (repeatable; default: every built-in)")
    p.add_argument("--suite", default=None, help="suite of the demo video (default: the measured one)")
    p.add_argument("--seed", type=int, default=None, help="which held-out video of the suite (index)")
    p.add_argument("--frames", type=int, default=48)
    add_model_args(p)
    add_precision_arg(p)
    p.add_argument("--out", default=None, help="output folder (default: a new sam2rl-fast-demo-<time>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=handlers["demo"])

    p = sub.add_parser("train", help="train memory-control agents with PPO (per-video or multi-video)")
    p.add_argument("--config", default=None, help="TOML config (see train/configs/); flags below override it")
    p.add_argument("--mode", choices=["per-video", "multi-video"], default=None)
    p.add_argument("--suite", action="append", help="suite (repeatable)")
    p.add_argument("--split", default=None,
                   help="synthetic: the seeds the videos come from (heldout | train); --dataset: a "
                        "split file's name (e.g. val; default: every annotated video)")
    p.add_argument("--dataset", default=None,
                   help="train on a dataset folder (DAVIS, MOSE or LVOS layout, every frame annotated) "
                        "instead of the synthetic suites")
    p.add_argument("--sequences", default=None, help="with --dataset: comma-separated videos to keep")
    p.add_argument("--videos", type=int, default=None, help="videos per suite")
    p.add_argument("--total-steps", type=int, default=None, help="environment steps per agent")
    p.add_argument("--num-envs", type=int, default=None, help="episodes stepped as one batch")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--model", default=None, help="SAM 2 checkpoint, Hugging Face id or config "
                   "(default: bundled demo model)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue a run in --out from its last checkpoints")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=handlers["train"])
    for p in (sub.choices["eval"], sub.choices["train"]):  # a Ray task per video: docs/cluster.md
        p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run on the Ray cluster at "
                       "ADDRESS (`ray start --head`'s, or $RAY_ADDRESS); without one on a new local Ray")
        p.add_argument("--ray-gpus", type=float, default=0.0, help="with --ray: GPUs of each task (0.25: 4 share one)")

    p_agent = sub.add_parser("export", help="export a trained agent (.zip) to ONNX for onnxruntime")
    p_attn = sub.add_parser("export-memory-attention",
                            help="export the model's memory attention to ONNX (RoPE as real arithmetic)")
    p_tracker = sub.add_parser("export-tracker",
                               help="export the tracker's networks (image encoder, memory attention, "
                                    "SAM heads, memory encoder) to one folder of ONNX files")
    try:
        from sam2rl_fast.export.agent import add_export_args, export_cli
        from sam2rl_fast.export.memory_attention import (
            add_export_memory_attention_args,
            export_memory_attention_cli,
        )
        from sam2rl_fast.export.tracker import add_export_tracker_args, export_tracker_cli
    except ImportError as e:  # e.g. sam2 missing: `info` must still run and say so
        missing = e

        def unavailable(args):
            raise UsageError(f"{args.command} is unavailable here: {missing}")

        for p in (p_agent, p_attn, p_tracker):
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=unavailable)
    else:
        add_export_args(p_agent)
        p_agent.set_defaults(func=export_cli)
        add_export_memory_attention_args(p_attn)
        p_attn.set_defaults(func=export_memory_attention_cli)
        add_export_tracker_args(p_tracker)
        p_tracker.set_defaults(func=export_tracker_cli)
    return parser
