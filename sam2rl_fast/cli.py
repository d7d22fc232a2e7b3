"""`sam2rl-fast` command line: info, track, eval, demo, train, export, export-memory-attention."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from sam2rl_fast.cli_args import UsageError, build_parser
from sam2rl_fast.outputs import (
    OutputDirError,
    StagedRun,
    check_out_path,
    record_outputs,
    staged_output,
    user_files,
)


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
        from sam2rl_fast.data.label_png import DatasetError, read_label_png

        p = Path(mpath)
        if not p.is_file():
            raise UsageError(f"mask file not found: {p}")
        try:  # indexed, grey or RGB (one object per colour), as the dataset reader's palette
            a = read_label_png(p, colours=True)
        except DatasetError as e:
            raise UsageError(f"--mask {e}") from None
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
        stage = StagedRun(args.out, args.overwrite, inputs)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser({"info": _info, "track": _track, "eval": _eval, "demo": _demo, "train": _train},
                          __doc__)
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
