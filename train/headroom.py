"""How much can memory decisions change a model's tracking? (`sam2rl_fast.rl.headroom`)

    python train/headroom.py --suite occlusion --suite distractor --videos 10 [--model CKPT]
    python train/headroom.py --dataset ROOT [--dataset-split val] [--sequences a,b] [--model CKPT]
    python train/headroom.py ... --ray [ADDRESS]   # a Ray task per video (docs/cluster.md)
    python train/headroom.py --suite drift --oracle 2 --oracle 4 --oracle 8   # and the oracle
                                                    # (beam search, locally), with its cost

Per video: the stock rule's J, and the mean-IoU gain over it of "prompt only", FIFO, and
K random decision sequences (their mean and best). If the best random gain is ~0 on a
suite, the model's output does not depend on its recent memories there, and no memory
policy (heuristic or learned) can improve it: train the model, not the agent. --oracle B
adds the best decision sequence a beam search of width B finds against the ground truth
(`sam2rl_fast.rl.oracle`): the reachable gain a policy's gain is compared with; each beam's
cost is printed (lane-steps: lanes x decisions; seconds). --json FILE writes every row.
"""

import argparse
import contextlib
import sys

import numpy as np

from sam2rl_fast.data.datasets import DatasetError, open_dataset, training_items
from sam2rl_fast.data.synthetic import generate_video, suite_seeds
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl.env import prepare_videos
from sam2rl_fast.rl.headroom import format_headroom, memory_headroom
from sam2rl_fast.rl.oracle import format_oracle, oracle_search


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", help="suite (repeatable; default occlusion, distractor)")
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"])
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--frames", type=int, default=24, help="frames per video (--dataset: at most)")
    ap.add_argument("--samples", type=int, default=32, help="random decision sequences per video")
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled demo model)")
    ap.add_argument("--dataset", default=None, help="a dataset folder (every frame annotated) instead "
                                                    "of the suites")
    ap.add_argument("--dataset-split", default=None, help="with --dataset: a split file's name (e.g. val)")
    ap.add_argument("--sequences", default=None, help="with --dataset: comma-separated videos")
    ap.add_argument("--oracle", type=int, action="append", default=None, metavar="BEAM",
                    help="also search the best decisions with a beam of BEAM (repeatable; local, not on Ray)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the oracle rows (actions included)")
    ap.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="a Ray task per video: on the Ray cluster at ADDRESS, or a new local Ray")
    args = ap.parse_args(argv)
    if args.dataset is not None and args.suite:
        ap.error("--suite and --dataset exclude each other")
    if args.oracle is not None and min(args.oracle) < 1:
        ap.error(f"--oracle: a beam must be >= 1, got {min(args.oracle)}")
    groups = {}  # title -> items (frames, masks, name)
    if args.dataset is not None:
        try:
            ds = open_dataset(args.dataset, split=args.dataset_split, sequences=args.sequences)
            groups[str(ds.root)] = training_items(ds, max_frames=args.frames)
        except DatasetError as e:
            ap.error(str(e))
    for suite in [] if args.dataset is not None else args.suite or ["occlusion", "distractor"]:
        groups[suite] = []
        for seed in suite_seeds(suite, args.split, count=args.videos):
            v = generate_video(suite, seed, num_frames=args.frames, height=256, width=256)
            groups[suite].append((v.frames, v.masks, f"{suite}-{seed}"))
    model = build_model(args.model, device="cpu")
    failed, oracle_rows = {}, []
    with contextlib.ExitStack() as stack:
        if args.ray is not None:  # the same rows, a Ray task per video
            from sam2rl_fast.rl.ray import RayOptions, session
            from sam2rl_fast.rl.ray.evaluate import headroom_rows

            opts = RayOptions(address=args.ray or None)
            box = [stack.enter_context(session(opts)).put(model)]
        for title, items in groups.items():
            vids = None
            if args.ray is None:
                vids = prepare_videos(items, model, progress=False)
                rows = memory_headroom(vids, model, samples=args.samples)
            else:
                rows, bad = headroom_rows(items, box, opts, samples=args.samples)
                failed |= bad
            _report(title, rows)
            if args.oracle is not None:
                vids = vids or prepare_videos(items, model, progress=False)
                for beam in args.oracle:
                    rows = [oracle_search(v, model, beam=beam) for v in vids]
                    _report_oracle(title, rows)
                    oracle_rows += [{"group": title, "video": r.video, "beam": r.beam, "stock": r.stock,
                                     "oracle": r.oracle, "gain": r.gain, "lane_steps": r.lane_steps,
                                     "seconds": round(r.seconds, 2), "actions": r.actions.tolist()}
                                    for r in rows]
    if args.json is not None and oracle_rows:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(oracle_rows, indent=1))
    if failed:
        print(f"error: {len(failed)} video(s) failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


def _report(title, rows) -> None:
    if rows:
        print(format_headroom(rows))
        best = np.mean([r.random_best for r in rows])
        print(f"{title}: mean stock J {np.mean([r.stock for r in rows]):.3f}, mean best-random gain "
              f"{best:+.4f}, largest change {max(r.max_pixels for r in rows)} px\n", flush=True)


def _report_oracle(title, rows) -> None:
    if rows:
        print(format_oracle(rows))
        steps, secs = sum(r.lane_steps for r in rows), sum(r.seconds for r in rows)
        print(f"{title}: mean oracle gain {np.mean([r.gain for r in rows]):+.4f} (beam {rows[0].beam}; "
              f"{steps} lane-steps, {secs / 60:.1f} min, {steps / max(secs, 1e-9):.0f} lane-steps/s)\n",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
