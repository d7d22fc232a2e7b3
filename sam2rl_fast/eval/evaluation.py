"""Agents compared on the synthetic suites: J, F, J&F and FPS per suite and agent.

Every video is generated from its suite and seed (held-out seeds by default), every agent
tracks it from the ground-truth masks of frame 0 with the same model, and the DAVIS
measures are computed on the frames after the prompt.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2rl_fast.data.synthetic import generate_video, suite_seeds
from sam2rl_fast.eval.metrics import evaluate_video
from sam2rl_fast.tracking.tracker import FastTracker


@dataclass
class VideoScore:
    suite: str
    seed: int
    agent: str
    J: float
    F: float
    JF: float
    fps: float
    iou_per_frame: np.ndarray = field(repr=False)  # [T, n_obj]


def agent_name(agent) -> str:
    """How reports name an agent: its file name, its built-in name, or its policy's name."""
    if isinstance(agent, (str, Path)) and Path(agent).suffix in (".zip", ".onnx"):
        return Path(agent).name
    return agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)


def prompts_from_ground_truth(masks: np.ndarray, first_only: bool = False) -> dict[int, np.ndarray]:
    """{k: mask on frame 0} for every target visible on frame 0 (or the first of them)."""
    visible = {k: masks[0, k] for k in range(masks.shape[1]) if masks[0, k].any()}
    return dict(list(visible.items())[:1]) if first_only else visible


def evaluate_agents(suites, agents, model, *, split="heldout", num_videos=4, num_frames=32,
                    size=256, first_target_only=False, seeds=None, progress=None,
                    log=print, precision: str = "fp32") -> list[VideoScore]:
    """Track `num_videos` videos of each suite with each agent; one `VideoScore` per pair.

    `model` is a built sam2 predictor (shared by all agents, so they differ only in memory).
    Every target visible on frame 0 is prompted with its mask there (only the first with
    `first_target_only`); a video with none visible is skipped. `seeds` replaces the
    split's first `num_videos` seeds.
    """
    scores = []
    jobs = [(s, seed) for s in suites
            for seed in (seeds if seeds is not None else suite_seeds(s, split, count=num_videos))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs) * len(agents), desc="evaluating", unit="run")
    for suite, seed in jobs:
        video = generate_video(suite, seed, num_frames=num_frames, height=size, width=size)
        prompt = prompts_from_ground_truth(video.masks, first_target_only)
        if not prompt:
            log(f"{video.name}: no target visible on frame 0, skipped")
            if bar is not None:
                bar.update(len(agents))
            continue
        gt = video.masks[:, list(prompt)]
        for agent in agents:
            res = FastTracker(video.frames, agent=agent, model=model, prompt=prompt,
                              precision=precision).run()
            m = evaluate_video(res.masks, gt)
            name = agent_name(agent)
            scores.append(VideoScore(suite, seed, str(name), m["J"], m["F"], m["JF"], res.fps,
                                     m["iou_per_frame"]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(suite=suite, agent=name, J=f"{m['J']:.3f}")
    if bar is not None:
        bar.close()
    return scores


def summarize(scores: list[VideoScore]) -> list[dict]:
    """Mean J, F, J&F, FPS per (suite, agent), in first-seen order."""
    groups: dict[tuple[str, str], list[VideoScore]] = {}
    for s in scores:
        groups.setdefault((s.suite, s.agent), []).append(s)
    return [{"suite": su, "agent": ag, "videos": len(g),
             "J": float(np.mean([s.J for s in g])), "F": float(np.mean([s.F for s in g])),
             "JF": float(np.mean([s.JF for s in g])), "FPS": float(np.mean([s.fps for s in g]))}
            for (su, ag), g in groups.items()]


def format_table(rows: list[dict]) -> str:
    lines = [f"{'suite':<15}{'agent':<12}{'videos':>7}{'J':>8}{'F':>8}{'J&F':>8}{'FPS':>8}"]
    for r in rows:
        lines.append(f"{r['suite']:<15}{r['agent']:<12}{r['videos']:>7}{r['J']:>8.3f}{r['F']:>8.3f}"
                     f"{r['JF']:>8.3f}{r['FPS']:>8.2f}")
    return "\n".join(lines)


def write_reports(scores: list[VideoScore], out: Path, plots: bool = True) -> list[Path]:
    """summary.csv / summary.json (per suite and agent), videos.csv, and per-video IoU plots."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(scores)
    written = [out / "summary.csv", out / "summary.json", out / "videos.csv"]
    with open(written[0], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    written[1].write_text(json.dumps(rows, indent=2))
    with open(written[2], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["suite", "seed", "agent", "J", "F", "JF", "fps"])
        for s in scores:
            w.writerow([s.suite, s.seed, s.agent, f"{s.J:.4f}", f"{s.F:.4f}", f"{s.JF:.4f}", f"{s.fps:.2f}"])
    if plots:
        written += plot_iou_per_frame(scores, out / "plots")
    return written


def plot_iou_per_frame(scores: list[VideoScore], folder: Path) -> list[Path]:
    """One PNG per video: per-frame IoU (mean over objects) of every agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    videos: dict[tuple[str, int], list[VideoScore]] = {}
    for s in scores:
        videos.setdefault((s.suite, s.seed), []).append(s)
    paths = []
    for (suite, seed), group in videos.items():
        fig, ax = plt.subplots(figsize=(7, 3))
        for s in group:
            ax.plot(np.arange(1, len(s.iou_per_frame)), s.iou_per_frame[1:].mean(1),
                    label=f"{s.agent} (J {s.J:.3f})")
        ax.set(xlabel="frame", ylabel="IoU", ylim=(-0.02, 1.02), title=f"{suite} seed {seed}")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = folder / f"{suite}-{seed}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths
