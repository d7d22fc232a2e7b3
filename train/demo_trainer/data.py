"""Training clips and the memory sets the model learns to read.

`ClipDataset` item i is a pure function of (seed, i): a suite, a training seed, a target, a
flip. `memory_schedule(seed, step, T)` is a pure function too: which frames of a batch's
clips are written to the bank and which memory each write evicts. Both are what makes a
run resume exactly without any data-loader or RNG state in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.data.synthetic import SUITES, generate_video, suite_seeds

# Training mix: every suite, weighted towards those where the memory decides.
SUITE_WEIGHTS = {"easy": 0.12, "occlusion": 0.1, "distractor": 0.1, "fast-motion": 0.08,
                 "mixed": 0.1, "drift": 0.18, "long-occlusion": 0.16, "look-alike": 0.16}
# How often each kind of memory schedule is drawn (see `memory_schedule`).
SCHEDULE_WEIGHTS = {"fifo": 0.4, "skip": 0.25, "evict": 0.25, "prompt-only": 0.1}


class ClipDataset(torch.utils.data.Dataset):
    """Item i: one training clip, a pure function of (seed, i).

    Returns a dict of numpy arrays: ``frames`` [T, S, S, 3] uint8, ``masks`` [T, S, S] bool
    (the visible part of the target), ``box`` [4] float32 (x0, y0, x1, y1 of the target on
    frame 0, in pixels), ``suite`` (index into `suites`).
    """

    def __init__(self, seed: int = 0, num_frames: int = 16, size: int = 256,
                 suite_weights: dict[str, float] | None = None, length: int = 10**9):
        self.seed, self.num_frames, self.size, self.length = int(seed), num_frames, size, length
        w = dict(suite_weights or SUITE_WEIGHTS)
        for s in w:
            if s not in SUITES:
                raise ValueError(f"unknown suite {s!r}; choose from {sorted(SUITES)}")
        self.suites = list(w)
        p = np.array([w[s] for s in self.suites], np.float64)
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"suite weights must be >= 0 and not all 0, got {w}")
        self.p = p / p.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i), 0x5A2])
        for _ in range(100):  # a target visible on the prompt frame (nearly always the first)
            k = int(rng.choice(len(self.suites), p=self.p))
            suite = self.suites[k]
            seeds = suite_seeds(suite, "train")
            vseed = int(rng.integers(seeds.start, seeds.stop))
            video = generate_video(suite, vseed, num_frames=self.num_frames, height=self.size,
                                   width=self.size)
            visible = np.flatnonzero(video.masks[0].reshape(video.masks.shape[1], -1).any(1))
            if len(visible):
                break
        else:  # pragma: no cover - the generator always shows a target on frame 0
            raise RuntimeError("no synthetic clip with a visible target on frame 0")
        obj = int(rng.choice(visible))
        frames, masks = video.frames, video.masks[:, obj]
        if rng.random() < 0.5:  # horizontal flip
            frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
        ys, xs = np.nonzero(masks[0])
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        return {"frames": np.ascontiguousarray(frames), "masks": np.ascontiguousarray(masks),
                "box": box, "suite": k}


def collate(items: list[dict]) -> dict:
    return {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in items[0]}


def batch_at(dataset: ClipDataset, step: int, batch: int) -> dict:
    """Batch `step`: items step*B .. step*B+B-1 (a pure function of the step)."""
    return collate([dataset[step * batch + j] for j in range(batch)])


class _Batches(torch.utils.data.Dataset):
    """Item k: batch `first + k` (`batch_at`), so that loader workers make whole batches."""

    def __init__(self, dataset: ClipDataset, batch: int, first: int, end: int):
        self.dataset, self.batch, self.first, self.end = dataset, batch, first, end

    def __len__(self) -> int:
        return max(0, self.end - self.first)

    def __getitem__(self, k: int) -> dict:
        return batch_at(self.dataset, self.first + k, self.batch)


def _one_thread(_worker_id: int):
    torch.set_num_threads(1)  # the generator is numpy: torch threads would only contend


def batches(dataset: ClipDataset, batch: int, first: int, end: int, workers: int = 0,
            pin_memory: bool = False):
    """Batches `first` .. `end - 1`, in order: the same tensors as `batch_at` whatever
    `workers` is (each batch is a pure function of its step), made ahead by `workers`
    processes. The generator makes ~100 frames/s on one core, so a GPU step needs many of
    them; `workers=0` makes each batch in the calling process when it is asked for."""
    if workers <= 0:
        return (batch_at(dataset, s, batch) for s in range(first, end))
    return iter(torch.utils.data.DataLoader(
        _Batches(dataset, batch, first, end), batch_size=None, shuffle=False,
        num_workers=workers, prefetch_factor=4, pin_memory=pin_memory,
        worker_init_fn=_one_thread, persistent_workers=False))


@dataclass(frozen=True)
class MemorySchedule:
    """What a batch's tracking writes to the bank: for frame t >= 1, ``store[t]`` says
    whether its memory is kept, and ``evict[t]`` which kept memory (its rank, 0 = oldest)
    it replaces when the 6 recent slots are full. Reading follows the tracker's rule for
    policies (`RecencyReadRule`): the prompt memory, then every kept memory, with temporal
    encodings by recency rank."""

    kind: str
    store: tuple[bool, ...]
    evict: tuple[int, ...]


def memory_schedule(seed: int, step: int, num_frames: int, recent_slots: int = 6,
                    weights: dict[str, float] | None = None) -> MemorySchedule:
    """The memory sets of a batch, as the policies make them: the stock FIFO, random skips
    (each frame kept with a random probability), random evictions (a random slot replaced
    when full), or the prompt alone."""
    w = weights or SCHEDULE_WEIGHTS
    rng = np.random.default_rng([seed, step, 0x3E3])
    kinds = list(w)
    p = np.array([w[k] for k in kinds], np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    T = num_frames
    if kind == "fifo":
        store, evict = [True] * T, [0] * T
    elif kind == "skip":
        keep = rng.uniform(0.25, 0.9)
        store, evict = (rng.random(T) < keep).tolist(), [0] * T
    elif kind == "evict":
        keep = rng.uniform(0.5, 1.0)
        store = (rng.random(T) < keep).tolist()
        evict = rng.integers(0, recent_slots, T).tolist()
    elif kind == "prompt-only":
        store, evict = [False] * T, [0] * T
    else:
        raise ValueError(f"unknown memory schedule {kind!r}")
    store[0] = False  # frame 0 is the prompt: always read, as a conditioning memory
    return MemorySchedule(kind, tuple(bool(s) for s in store), tuple(int(e) for e in evict))
