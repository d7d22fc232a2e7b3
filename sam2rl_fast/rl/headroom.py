"""How much can memory decisions change a model's tracking? Measure it before training.

An agent can only gain where the model's output depends on what the bank holds. For each
video, `memory_headroom` tracks the whole video under fixed rules (keep nothing but the
prompt, FIFO over the free slots) and under K random decision sequences, all as lanes of
one batch, and reports each one's mean IoU against the stock rule's. The best of the K
random sequences is a lower bound on what a per-video agent could reach; if it is ~0, no
memory policy can help that model on that video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam2rl_fast.memory.selection import fifo_slot
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane


@dataclass
class Headroom:
    video: str
    stock: float  # mean IoU of the stock rule over the rewarded frames (2..L-1)
    drop: float  # gain of "keep only the prompt"
    fifo: float  # gain of "store every frame, overwrite the oldest"
    random_mean: float  # mean gain of K random decision sequences
    random_best: float  # best gain among them (a lower bound for a per-video agent)
    max_pixels: int  # largest number of pixels any sequence changed on a frame vs drop


def memory_headroom(videos: list[EpisodeVideo], model, *, samples: int = 32, seed: int = 0,
                    obj: int = 0, progress: bool = True) -> list[Headroom]:
    rng = np.random.default_rng(seed)
    n = samples + 2
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(videos), desc="headroom", unit="video")
    for v in videos:
        batch = EpisodeBatch([v], model, n, obj=obj, reward="improvement")
        L = batch.L
        lanes = [Lane(0, obj, 0)] * n
        batch.reset(lanes)
        cap = batch.capacity
        gains = np.zeros(n)
        max_px = 0
        for t in range(1, L - 1):
            act = rng.integers(0, cap + 1, n)
            act[0] = 0  # drop: only the prompt
            act[1] = 1 + fifo_slot(batch.obs.slot_frame[1], batch.obs.slot_is_cond[1])  # FIFO
            _, r, _, _ = batch.step(act)
            gains += r
            diff = [(m != batch.masks[0]).sum() for m in batch.masks[1:]]
            max_px = max(max_px, int(max(diff)))
        gains /= L - 2
        stock = float(batch.stock_ious(lanes[:1])[0, 2:].mean())
        batch.close()
        out.append(Headroom(v.name, stock, float(gains[0]), float(gains[1]),
                            float(gains[2:].mean()), float(gains[2:].max()), max_px))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def format_headroom(rows: list[Headroom]) -> str:
    lines = [f"{'video':<22}{'stock J':>8}{'drop':>9}{'fifo':>9}{'rand mean':>10}{'rand best':>10}{'max px':>8}"]
    for r in rows:
        lines.append(f"{r.video:<22}{r.stock:>8.3f}{r.drop:>+9.4f}{r.fifo:>+9.4f}{r.random_mean:>+10.4f}"
                     f"{r.random_best:>+10.4f}{r.max_pixels:>8d}")
    return "\n".join(lines)
