"""A training run's record: the progress bar, the CSV of finished episodes, periodic
checkpoints (an SB3 callback) and the training-curve plot drawn from the CSVs."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

EPISODE_COLUMNS = ["timesteps", "wall_s", "video", "return", "episode_iou", "stock_episode_iou"]


class Progress(BaseCallback):
    """SB3 callback: a tqdm bar, the episodes CSV and periodic checkpoints with metadata."""

    def __init__(self, total, csv_path, ckpt_dir, every, save, desc, progress, pending_log=None):
        super().__init__()
        self.pending_log = pending_log  # a resumed run's logger values not yet written
        self.total, self.every, self.save, self.desc = total, every, save, desc
        self.csv_path, self.ckpt_dir, self.progress = csv_path, ckpt_dir, progress
        self.bar, self.next_ckpt, self.recent = None, every, []

    def _on_training_start(self):
        for k, v in (self.pending_log or {}).items():
            getattr(self.model.logger, k).update(v)
        if self.every:  # the next multiple of `every` (a resumed run does not restart the count)
            self.next_ckpt = (self.num_timesteps // self.every + 1) * self.every
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.num_timesteps, desc=self.desc,
                            unit="step", smoothing=0.1)
        # rows past the checkpoint this run resumes from were written by a run that was
        # killed later: they are replayed now, so they go (and a header-less file gets one)
        keep = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as fh:
                keep = [r for r in csv.DictReader(fh) if r.get("timesteps", "").isdigit()
                        and int(r["timesteps"]) <= self.num_timesteps]
        self.fh = open(self.csv_path, "w", newline="")  # noqa: SIM115 - open for the whole run
        self.csv = csv.writer(self.fh)
        self.csv.writerow(EPISODE_COLUMNS)
        for r in keep:
            self.csv.writerow([r[k] for k in EPISODE_COLUMNS])
        self.fh.flush()
        self.t0 = time.perf_counter()

    def _on_step(self):
        for info in self.locals.get("infos", []):
            if "episode_iou" in info:
                ret = info.get("episode", {}).get("r", float("nan"))
                self.csv.writerow([self.num_timesteps, f"{time.perf_counter() - self.t0:.1f}",
                                   info["video"], f"{ret:.4f}", f"{info['episode_iou']:.4f}",
                                   f"{info.get('stock_episode_iou', float('nan')):.4f}"])
                self.fh.flush()  # a killed run keeps its rows up to the kill
                self.recent = (self.recent + [info["episode_iou"] - info.get("stock_episode_iou", 0)])[-64:]
        if self.bar is not None:
            self.bar.update(self.num_timesteps - self.bar.n)
            if self.recent:
                self.bar.set_postfix(gain=f"{np.mean(self.recent):+.4f}")
        return True

    def _on_rollout_start(self):
        # After the previous rollout's PPO update (SB3 trains between rollouts): a checkpoint
        # taken here holds every update so far, so a resume from it loses none.
        if self.every and self.num_timesteps >= self.next_ckpt:
            self.save(self.ckpt_dir / f"step{self.num_timesteps:08d}.zip", with_state=True)
            self.next_ckpt = (self.num_timesteps // self.every + 1) * self.every

    def _on_training_end(self):
        if self.bar is not None:
            self.bar.close()
        self.fh.close()


def plot_curves(csv_paths: list[Path], png: Path) -> Path:
    """Training curve(s): mean episode IoU gain over the stock rule per batch of finished
    episodes (they end together), against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    label = len(csv_paths) <= 8
    for p in csv_paths:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            continue
        steps = np.array([int(r["timesteps"]) for r in rows])
        gain = np.array([float(r["episode_iou"]) - float(r["stock_episode_iou"]) for r in rows])
        x = np.unique(steps)
        ax.plot(x, [gain[steps == s].mean() for s in x], marker=".", lw=1,
                label=p.stem.replace("-episodes", "") if label else None)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="environment steps", ylabel="episode IoU - stock rule", title="training")
    if label:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
