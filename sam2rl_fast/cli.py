"""`sam2rl-fast` command line: info, track, eval, demo, train, export, export-memory-attention."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from sam2rl_fast.outputs import (
    OutputDirError,
    check_out_path,
    record_outputs,
    staged_output,
    user_files,
)


class UsageError(ValueError):
    """A user error found by the command line: one line on stderr, exit status 2."""


def _info(args) -> int:
    from sam2rl_fast import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>20}: {v}")
    return 0 if info["extension_loaded"] else 1


def _floats(text: str, n: int | None, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise UsageError(f"{what} needs {n} numbers, got {text!r}")
    return vals


def _prompts(args) -> dict:
    """{obj_id: prompt} from --box / --mask / --points (each repeatable: one object each)."""
    import numpy as np

    prompts, k = {}, 0
    for b in args.box or []:
        prompts[k], k = tuple(_floats(b, 4, "--box x0,y0,x1,y1")), k + 1
    for mpath in args.mask or []:
        from PIL import Image

        p = Path(mpath)
        if not p.is_file():
            raise UsageError(f"mask file not found: {p}")
        try:
            with Image.open(p) as img:
                a = np.array(img)
        except Exception as e:  # PIL's errors for a file that is not an image
            raise UsageError(f"--mask {p} is not an image PNG/JPEG ({type(e).__name__})") from None
        a = _mask_labels(a, p)
        ids = [v for v in np.unique(a) if v != 0]
        if not ids:
            raise UsageError(f"mask {p} is empty (all zero)")
        for v in ids:  # an indexed PNG holds one object per value (DAVIS layout)
            prompts[k], k = a == v, k + 1
    for pts in args.points or []:
        vals = [_floats(t, 3, "--points x,y,label;...") for t in pts.split(";") if t.strip()]
        prompts[k], k = ([v[:2] for v in vals], [int(v[2]) for v in vals]), k + 1
    if not prompts:
        raise UsageError("give at least one prompt: --box, --mask or --points")
    return {args.frame: prompts}


def _mask_labels(a, path):
    """[H, W] object labels of a --mask image: an indexed or grayscale PNG as it is (one
    object per value); an RGB one by its colours (one object per colour, black the
    background; DAVIS palette colours in palette order), as the dataset reader's palette."""
    import numpy as np

    from sam2rl_fast.data.datasets import palette

    if a.ndim == 2:
        return a
    rgb = a[..., :3]
    if (rgb == rgb[..., :1]).all():  # grey stored as RGB
        return rgb[..., 0]
    colours, inv = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    if len(colours) > 255:
        raise UsageError(f"--mask {path}: {len(colours)} colours (a photo, or a JPEG-compressed "
                         "mask?); give one flat colour per object, or an indexed PNG")
    pal = {tuple(palette()[3 * k: 3 * k + 3]): k for k in range(256)}
    order = sorted(range(len(colours)), key=lambda i: (pal.get(tuple(colours[i]), 256), tuple(colours[i])))
    ids = np.zeros(len(colours), np.uint8)
    k = 0
    for i in order:
        if tuple(colours[i]) != (0, 0, 0):
            k += 1
            ids[i] = k
    return ids[inv.reshape(-1)].reshape(rgb.shape[:2])


def _check_agent_names(agents, option: str = "--agent") -> list[str]:
    """Report names of the agents; two agents of one name (the same one twice, or two files
    of one name) would be counted as one: refused."""
    from sam2rl_fast.eval.evaluation import agent_name

    names = [agent_name(a) for a in agents]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{option}: two agents share the name {dup[0]!r} ({names}); their results "
                         "would be merged: give each agent once, and files of different names")
    return names


def _positive(args, *options) -> None:
    for opt in options:
        v = getattr(args, opt.lstrip("-").replace("-", "_"))
        if v is not None and v < 1:
            raise UsageError(f"{opt} must be at least 1, got {v}")


def _track(args) -> int:
    import math

    from sam2rl_fast import FastTracker

    if not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps must be > 0 and finite, got {args.fps}")
    prompt = _prompts(args)
    inputs = [args.video, args.model, args.config, args.agent, *(args.mask or [])]
    check_out_path(args.out, inputs)  # before any work
    tracker = FastTracker(args.video, agent=args.agent, model=_model_for(args), prompt=prompt,
                          progress=not args.quiet, precision=args.precision)
    with staged_output(args.out, args.overwrite, inputs, "track") as out:
        n = _write_tracking(tracker, out, args)
    print(f"tracked {n} frames -> {args.out}/ (masks/, scores.csv, summary.json, overlay.mp4)")
    return 0


def _write_tracking(tracker, out: Path, args) -> int:
    from sam2rl_fast.eval.tracking_files import write_tracking

    return write_tracking(tracker, out, video=args.video, model=args.model, fps=args.fps)


def _model_for(args):
    from sam2rl_fast.model.loading import build_model

    return build_model(args.model, config=args.config, device=args.device, image_size=args.image_size)


def _eval_setup(args):
    """(the ray CLI module or None, the model, the agents: --agent or the defaults for the model)."""
    from sam2rl_fast.policies.bundled import default_agents

    if args.ray is not None and args.precision != "fp32":
        raise UsageError("--precision bf16 runs locally only (not with --ray yet)")
    if args.agent:
        _check_agent_names(args.agent)
    ray = None if args.ray is None else importlib.import_module("sam2rl_fast.rl.ray.cli")  # --ray
    model = _model_for(args) if ray is None else ray.model(args)
    return ray, model, args.agent or default_agents(model)


def _eval_dataset(args) -> int:
    from sam2rl_fast.data.datasets import open_dataset
    from sam2rl_fast.eval.dataset_eval import evaluate_dataset, format_dataset_table

    if args.suite:
        raise UsageError("--suite and --dataset exclude each other")
    dataset = open_dataset(args.dataset, split=args.split, sequences=args.sequences,
                           resolution=args.resolution)
    inputs = [args.model, args.config, args.dataset, *(args.agent or [])]
    check_out_path(args.out, inputs)
    ray, model, agents = _eval_setup(args)
    names = _check_agent_names(agents)
    print(f"{dataset.root} ({dataset.layout} layout, split {dataset.split or 'all'}): "
          f"{len(dataset)} video(s)")
    with staged_output(args.out, args.overwrite, inputs, "eval") as out:
        runs, failed = (evaluate_dataset(dataset, agents, model, out, names=names, progress=not args.quiet,
                                         precision=args.precision), {}) \
            if ray is None else ray.eval_dataset(args, model, dataset, agents, out, names)
        print(format_dataset_table(runs))
    split = dataset.split or "all"
    print(f"-> {args.out}/<agent>/ (global_results-{split}.csv, per-sequence_results-{split}.csv, "
          "<video>/<frame>.png masks)")
    return ray.failed(failed) if failed else 0


def _eval(args) -> int:
    from sam2rl_fast.data.synthetic import SUITES

    if args.dataset is not None:
        return _eval_dataset(args)
    _positive(args, "--videos", "--frames", "--size")
    if args.sequences is not None or args.resolution is not None:
        raise UsageError("--sequences and --resolution need --dataset")
    args.split = args.split or "heldout"
    if args.split not in ("heldout", "train"):
        raise UsageError(f"--split {args.split}: the synthetic suites have the splits "
                         "heldout and train (dataset splits need --dataset)")
    from sam2rl_fast.eval.evaluation import (
        evaluate_agents,
        format_table,
        summarize,
        write_reports,
    )

    suites = args.suite or list(SUITES)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise UsageError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    inputs = [args.model, args.config, *(args.agent or [])]
    check_out_path(args.out, inputs)
    ray, model, agents = _eval_setup(args)
    with staged_output(args.out, args.overwrite, inputs, "eval") as out:
        scores, failed = (evaluate_agents(suites, agents, model,
                                          split=args.split, num_videos=args.videos, num_frames=args.frames,
                                          size=args.size, progress=not args.quiet,
                                          precision=args.precision), {}) if ray is None \
            else ray.eval_suites(args, model, suites, agents)
        print(format_table(summarize(scores)))
        write_reports(scores, out)
    print(f"-> {args.out}/ (summary.csv, summary.json, videos.csv, plots/)")
    return ray.failed(failed) if failed else 0


def _demo(args) -> int:
    import time

    from sam2rl_fast.eval.demo import run_demo

    out = args.out or f"sam2rl-fast-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    inputs = [args.model, args.config, *(args.agent or [])]
    check_out_path(out, inputs)
    if args.agent:
        _check_agent_names(args.agent)
    _positive(args, "--frames")
    model = _model_for(args)  # a missing model fails before anything is written
    with staged_output(out, args.overwrite, inputs, "demo") as stage:
        run_demo(model, stage, seed_index=args.seed, suite=args.suite, num_frames=args.frames,
                 agents=args.agent, progress=not args.quiet, shown_dir=out,
                 precision=args.precision)
    return 0


def _train(args) -> int:
    from sam2rl_fast.rl.training import TrainConfig, run_training

    if args.dataset is not None and args.suite:
        raise UsageError("--suite and --dataset exclude each other")
    seqs = None if args.sequences is None else [s for s in args.sequences.split(",") if s.strip()]
    split = args.split if args.dataset is None else None
    if split is not None and split not in ("heldout", "train"):
        raise UsageError(f"--split {split}: the synthetic suites have the splits heldout "
                         "and train (dataset splits need --dataset)")
    overrides = dict(mode=args.mode, suites=args.suite, num_videos=args.videos, total_steps=args.total_steps,
                     num_envs=args.num_envs, seed=args.seed, model=args.model, split=split,
                     dataset=args.dataset, sequences=seqs,
                     dataset_split=args.split if args.dataset is not None else None)
    # every setting (types and ranges) is checked here, and the dataset opened, before
    # --out is touched
    cfg = (TrainConfig.from_toml(args.config, **overrides) if args.config
           else TrainConfig(**{k: v for k, v in overrides.items() if v is not None}))
    _check_training_data(cfg)
    inputs = [args.config, args.model, cfg.model, cfg.dataset]
    stage = None
    if args.resume:
        out = check_out_path(args.out, inputs)
        if not out.is_dir():
            raise UsageError(f"--resume: {args.out} does not exist")
    else:  # over an earlier run: in a staging folder, moved into --out when it ends
        stage = _StagedRun(args.out, args.overwrite, inputs)
        out = stage.folder
    before = user_files(out)  # the user's files here: never listed as ours
    try:
        if args.ray is None:
            agents = run_training(cfg, out, resume=args.resume, progress=not args.quiet)
        else:  # --ray: Ray and the fleet load only here
            ray = importlib.import_module("sam2rl_fast.rl.ray.cli")
            agents = ray.run_fleet(cfg, out, ray.options(args), resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        if stage is not None:
            out = stage.end(KeyboardInterrupt())
            if out is None:
                print(f"\ninterrupted: {args.out} was left as it was; no checkpoint of this "
                      "run was kept", file=sys.stderr)
                return 130
        ckpts = sorted(out.glob("checkpoints/*/step*.zip"), key=lambda p: p.stat().st_mtime)
        where = f"the last checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written yet"
        print(f"\ninterrupted: {where}; continue with the same options and --resume "
              f"(finished agents in {out} are kept)", file=sys.stderr)
        return 130
    except BaseException as e:
        if stage is not None:
            stage.end(e)
        raise
    finally:  # what this run wrote, so that a later --overwrite removes exactly that
        if stage is None:
            record_outputs(out, "train", before)
    if stage is not None:
        out = stage.end(None)
    print(f"-> {out}/ ({len(agents)} agent file(s), training-curve.png, tensorboard/, checkpoints/)")
    for a in agents:
        print(f"   {a}")
    return 0


def _check_training_data(cfg) -> None:
    """A training dataset is opened (every file checked) and needs every frame annotated:
    both known before any folder is made."""
    if cfg.dataset is None:
        return
    from sam2rl_fast.data.datasets import check_fully_annotated, open_dataset

    check_fully_annotated(open_dataset(cfg.dataset, split=cfg.dataset_split, sequences=cfg.sequences))


class _StagedRun:
    """Where a new training run writes. Into --out itself when it is new or empty (nothing
    to lose; a killed run resumes from it); over an earlier run (--overwrite) into a staging
    folder (`staged_output`), moved in when it ends, so that a failed, interrupted or
    killed run leaves the earlier run as it was. A run that fails before its first
    checkpoint leaves nothing."""

    def __init__(self, out, overwrite: bool, inputs):
        from sam2rl_fast.outputs import clean_stale

        path = check_out_path(out, inputs)
        self.out, self.path = Path(out), path
        self.fresh = not (path.is_dir() and any(path.iterdir()))
        self._cm = None
        if self.fresh:
            self.created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            clean_stale(path)
            self.folder = path
        else:
            self._cm = staged_output(out, overwrite, inputs, "train")
            self.folder = self._cm.__enter__()
        self._ended = False

    def end(self, error):
        """Finish (error None) or abandon the run; the folder it is now in, or None."""
        import shutil

        if self._ended:
            return self.out
        self._ended = True
        if self._cm is not None:
            if error is None:
                self._cm.__exit__(None, None, None)
                return self.out
            self._cm.__exit__(type(error), error, error.__traceback__)
            return None
        if error is not None and not (any(self.path.glob("checkpoints/*/step*.zip"))
                                      or any(self.path.glob("*.zip"))):
            for p in list(self.path.iterdir()):  # the folder was new or empty: all is this run's
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            if self.created:
                self.path.rmdir()
            return None
        record_outputs(self.path, "train", set())
        return self.out


def _add_precision_arg(p):
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default, exact against stock) or bf16 (autocast, as SAM 2 on GPUs)")


def _add_model_args(p):
    p.add_argument("--model", default=None, help="SAM 2 checkpoint, Hugging Face id (facebook/sam2.1-hiera-tiny, "
                   "from the HF cache) or config name (default: bundled demo model)")
    p.add_argument("--config", default=None, help="config of the checkpoint (default: inferred)")
    p.add_argument("--image-size", type=int, default=None, help="model input size override")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam2rl-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="how the extension was built and whether a GPU is usable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)

    p = sub.add_parser("track", help="track objects through a video")
    p.add_argument("video", help="video file, folder of JPEG/PNG frames")
    p.add_argument("--box", action="append", help="x0,y0,x1,y1 in pixels (one object each)")
    p.add_argument("--mask", action="append", help="PNG mask (an indexed PNG: one object per value)")
    p.add_argument("--points", action="append", help="'x,y,label;x,y,label' (label 1 object, 0 background)")
    p.add_argument("--frame", type=int, default=0, help="frame the prompts are on (default 0)")
    p.add_argument("--agent", default="sam2", help="sam2 | samurai | dam4sam | agent file")
    _add_model_args(p)
    _add_precision_arg(p)
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_track)

    p = sub.add_parser("eval", help="compare agents on the synthetic suites or a dataset folder "
                                    "(J, F, J&F, FPS)")
    p.add_argument("--dataset", default=None,
                   help="dataset folder (DAVIS, MOSE, YouTube-VOS, LVOS or SA-V layout): score it as "
                        "the DAVIS 2017 toolkit does, instead of the synthetic suites")
    p.add_argument("--sequences", default=None, help="with --dataset: comma-separated videos to keep")
    p.add_argument("--resolution", default=None, help="with --dataset: DAVIS' 480p (default) or "
                                                      "Full-Resolution")
    p.add_argument("--suite", action="append", help="suite (repeatable; default: all)")
    p.add_argument("--agent", action="append", help="agent (repeatable; default: sam2, samurai, dam4sam)")
    p.add_argument("--split", default=None,
                   help="synthetic: heldout (default) or train; --dataset: a split file's name "
                        "(e.g. val for ImageSets/2017/val.txt; default: every annotated video)")
    p.add_argument("--videos", type=int, default=4, help="videos per suite")
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--size", type=int, default=256, help="video side in pixels (the demo model was trained at 256)")
    _add_model_args(p)
    _add_precision_arg(p)
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_eval)

    p = sub.add_parser("demo", help="track a held-out synthetic video with every agent; overlay video + GIF")
    p.add_argument("--agent", action="append", help="agent (repeatable; default: every built-in)")
    p.add_argument("--suite", default=None, help="suite of the demo video (default: the measured one)")
    p.add_argument("--seed", type=int, default=None, help="which held-out video of the suite (index)")
    p.add_argument("--frames", type=int, default=48)
    _add_model_args(p)
    _add_precision_arg(p)
    p.add_argument("--out", default=None, help="output folder (default: a new sam2rl-fast-demo-<time>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_demo)

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
    p.set_defaults(func=_train)
    for p in (sub.choices["eval"], sub.choices["train"]):  # a Ray task per video: docs/cluster.md
        p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run on the Ray cluster at "
                       "ADDRESS (`ray start --head`'s, or $RAY_ADDRESS); without one on a new local Ray")
        p.add_argument("--ray-gpus", type=float, default=0.0, help="with --ray: GPUs of each task (0.25: 4 share one)")

    p_agent = sub.add_parser("export", help="export a trained agent (.zip) to ONNX for onnxruntime")
    p_attn = sub.add_parser("export-memory-attention",
                            help="export the model's memory attention to ONNX (RoPE as real arithmetic)")
    try:
        from sam2rl_fast.export.agent import add_export_args, export_cli
        from sam2rl_fast.export.memory_attention import (
            add_export_memory_attention_args,
            export_memory_attention_cli,
        )
    except ImportError as e:  # e.g. sam2 missing: `info` must still run and say so
        missing = e

        def unavailable(args):
            raise UsageError(f"{args.command} is unavailable here: {missing}")

        for p in (p_agent, p_attn):
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=unavailable)
    else:
        add_export_args(p_agent)
        p_agent.set_defaults(func=export_cli)
        add_export_memory_attention_args(p_attn)
        p_attn.set_defaults(func=export_memory_attention_cli)

    args = parser.parse_args(argv)
    import warnings

    from sam2rl_fast.model.loading import RandomWeightsWarning

    def _show(message, category, *a, **k):  # one readable line, not a source excerpt
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RandomWeightsWarning)
        warnings.showwarning = _show
        return _run(args)


def _run(args) -> int:
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OutputDirError) as e:  # bad input: one clear line
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written: one line naming it
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the outputs are staged: nothing half-written was kept
        print(f"\ninterrupted: {args.command} stopped; its output was left as it was",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
