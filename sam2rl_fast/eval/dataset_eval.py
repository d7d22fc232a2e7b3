"""Agents scored on a user's dataset folder, as the DAVIS 2017 toolkit scores semi-supervised VOS.

Every object is prompted with its first annotation (an object that appears later starts
there, with its own memory); every frame is tracked. DAVIS-like folders: the masks are made
non-overlapping (where objects overlap the lower id wins, as sam2's `vos_inference.py`
writes them) and scored on the annotated frames but the video's first and last (DAVIS
2017's `[1:-1]`); 255 ("void") counts as background, as in the toolkit's semi-supervised
task. SA-V folders: masks stay per object (SA-V's `--per_obj_png_file`) and the first and
last annotated frames are left out, as SA-V's evaluator does. Per object: J and F mean,
recall (share of frames above 0.5) and decay (first quarter minus last); the global means
are over objects (pooled across videos).

Each agent's folder is what the DAVIS toolkit reads and writes: `<video>/<frame>.png`
palette masks (SA-V: `<video>/<obj:03d>/<frame>.png`), `global_results-<split>.csv` and
`per-sequence_results-<split>.csv`.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2rl_fast.data.datasets import Dataset, DatasetVideo, check_video_name
from sam2rl_fast.data.label_png import write_label_png, write_mask_png
from sam2rl_fast.eval.metrics import db_statistics, frame_scores
from sam2rl_fast.tracking.tracker import FastTracker

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]


@dataclass
class ObjectResult:
    """One object of one video: J and F on each scored frame (`frames`)."""

    video: str
    obj_id: int
    frames: list[int]
    J: np.ndarray
    F: np.ndarray

    @property
    def sequence(self) -> str:
        return f"{self.video}_{self.obj_id}"

    def stats(self) -> dict:
        jm, jr, jd = db_statistics(self.J)
        fm, fr, fd = db_statistics(self.F)
        return {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


@dataclass
class VideoRun:
    """An agent on one video: its objects' results and the tracking speed."""

    video: str
    agent: str
    objects: list[ObjectResult]
    fps: float


def non_overlapping(masks: np.ndarray, obj_ids: list[int]) -> np.ndarray:
    """uint8 [H, W] labels of bool [K, H, W] masks; where masks overlap the lowest id wins."""
    labels = np.zeros(masks.shape[1:], np.uint8)
    for k in sorted(range(len(obj_ids)), key=lambda k: obj_ids[k], reverse=True):
        labels[masks[k]] = obj_ids[k]
    return labels


def scored_frames(video: DatasetVideo) -> list[int]:
    """DAVIS-like: annotated frames but the video's first and last (DAVIS 2017's `[1:-1]`);
    SA-V: annotated frames but the first and last annotated (SA-V's evaluator)."""
    annotated = sorted(video.annotations)
    if video.layout == "sav":
        return annotated[1:-1]
    return [f for f in annotated if 0 < f < video.num_frames - 1]


def track_video(video: DatasetVideo, agent, model, masks_dir: Path | None = None,
                name: str | None = None, bar=None, precision: str = "fp32") -> VideoRun:
    """Track `video` with `agent`, write its palette masks to `masks_dir/<video>/`, score it."""
    if masks_dir is not None:  # a name, never a path out of the output folder
        check_video_name(video.name, "dataset")
    gt = video.ground_truth()
    prompt = gt.prompt()
    if not prompt:
        voids = any(v is not None for v in gt.void.values())
        raise ValueError(f"video {video.name!r}: no object is visible in any annotation"
                         + (" (they hold only 0 and 255; 255 marks void pixels, not scored, not "
                            "an object: label objects 1..254)" if voids else ""))
    firsts = gt.first_frames()  # one pass over the annotations
    ids = [o for o in gt.obj_ids if o in firsts]
    gt_row = [gt.obj_ids.index(o) for o in ids]
    if max(ids) > 254:
        raise ValueError(f"video {video.name!r}: object id {max(ids)} does not fit a palette PNG")
    scored = set(scored_frames(video))
    per_obj = {o: ([], [], []) for o in ids}  # frames, J, F
    folder = None
    if masks_dir is not None:
        folder = masks_dir / video.name
        folder.mkdir(parents=True, exist_ok=True)
    tracker = FastTracker(video.open(), agent=agent, model=model, prompt=prompt, precision=precision)
    H, W = tracker.H, tracker.W
    order = [tracker.obj_ids.index(o) for o in ids]
    ms, n_tracked, f_next = 0.0, 0, 0

    per_object = video.layout == "sav"
    if folder is not None and per_object:
        for o in ids:
            (folder / f"{o:03d}").mkdir(exist_ok=True)

    def finish(f: int, masks: np.ndarray) -> None:
        stem = video.frames[f].stem
        if per_object:
            if folder is not None:
                for k, o in enumerate(ids):
                    write_mask_png(masks[k], folder / f"{o:03d}" / f"{stem}.png")
        else:
            labels = non_overlapping(masks, ids)
            masks = labels[None] == np.array(ids, np.uint8).reshape(-1, 1, 1)
            if folder is not None:
                write_label_png(labels, folder / f"{stem}.png")
        if f in scored:
            for k, o in enumerate(ids):
                j, fm = frame_scores(masks[k], gt.masks[f][gt_row[k]])
                for lst, v in zip(per_obj[o], (f, j, fm)):
                    lst.append(v)

    for fr in tracker:
        for f in range(f_next, fr.index):  # before the first prompt: nothing tracked
            finish(f, np.zeros((len(ids), H, W), bool))
        finish(fr.index, fr.masks[order])
        f_next = fr.index + 1
        ms += sum(fr.timings.values())
        n_tracked += 1
        if bar is not None:
            bar.update(1)
    for f in range(f_next, video.num_frames):
        finish(f, np.zeros((len(ids), H, W), bool))
    objects = [ObjectResult(video.name, o, fr_, np.array(j), np.array(fm))
               for o, (fr_, j, fm) in per_obj.items()]
    return VideoRun(video.name, name or str(agent), objects, 1000.0 * n_tracked / ms if ms else 0.0)


def evaluate_dataset(dataset: Dataset, agents, model, out: Path | None = None, *,
                     names: list[str] | None = None, progress: bool = True,
                     log=print, precision: str = "fp32") -> dict[str, list[VideoRun]]:
    """Every agent on every video of `dataset`; masks and the toolkit's CSVs under `out/<agent>/`."""
    names = names or [str(a) for a in agents]
    runs: dict[str, list[VideoRun]] = {n: [] for n in names}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(v.num_frames for v in dataset.videos) * len(agents)
        bar = tqdm(total=total, desc="evaluating", unit="frame")
    t0 = time.perf_counter()
    try:
        for video in dataset.videos:
            for agent, name in zip(agents, names):
                if bar is not None:
                    bar.set_postfix(video=video.name, agent=name)
                run = track_video(video, agent, model, None if out is None else out / name, name, bar,
                                  precision)
                runs[name].append(run)
    finally:
        if bar is not None:
            bar.close()
    unscored = sorted({o.sequence for rs in runs.values() for r in rs for o in r.objects if not o.frames})
    if unscored:
        log(f"{len(unscored)} object(s) have no annotated frame to score (beyond the prompt and the "
            f"first and last frames), e.g. {unscored[:3]}: their masks are written, their scores are NaN")
    if out is not None:
        for name, rs in runs.items():
            write_toolkit_csvs(rs, out / name, dataset.split or "all")
    log(f"{len(dataset.videos)} video(s) x {len(agents)} agent(s) in {time.perf_counter() - t0:.0f} s")
    return runs


def global_row(runs: list[VideoRun]) -> dict:
    """The toolkit's global means (over every object of every video)."""
    stats = [o.stats() for r in runs for o in r.objects]

    def mean(xs):
        xs = np.array(xs, np.float64)
        return float(np.nanmean(xs)) if np.isfinite(xs).any() else float("nan")

    row = {k: mean([s[k] for s in stats]) for k in GLOBAL_COLUMNS[1:]}
    return {"J&F-Mean": (row["J-Mean"] + row["F-Mean"]) / 2, **row}


def write_toolkit_csvs(runs: list[VideoRun], folder: Path, split: str) -> list[Path]:
    """`global_results-<split>.csv` and `per-sequence_results-<split>.csv`, the DAVIS toolkit's
    files (3 decimals)."""
    folder.mkdir(parents=True, exist_ok=True)
    g, s = folder / f"global_results-{split}.csv", folder / f"per-sequence_results-{split}.csv"
    row = global_row(runs)
    with open(g, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(GLOBAL_COLUMNS)
        w.writerow([f"{row[k]:.3f}" for k in GLOBAL_COLUMNS])
    with open(s, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SEQUENCE_COLUMNS)
        for r in runs:
            for o in r.objects:
                st = o.stats()
                w.writerow([o.sequence, f"{st['J-Mean']:.3f}", f"{st['F-Mean']:.3f}"])
    return [g, s]


def format_dataset_table(runs: dict[str, list[VideoRun]]) -> str:
    lines = [f"{'agent':<14}{'objects':>8}" + "".join(f"{c:>10}" for c in GLOBAL_COLUMNS) + f"{'FPS':>8}"]
    for name, rs in runs.items():
        row = global_row(rs)
        fps = float(np.mean([r.fps for r in rs]))
        lines.append(f"{name:<14}{sum(len(r.objects) for r in rs):>8}"
                     + "".join(f"{row[c]:>10.3f}" for c in GLOBAL_COLUMNS) + f"{fps:>8.2f}")
    return "\n".join(lines)
