"""What runs in Ray's workers: one task per video.

A task gets the run's model from the object store (fetched once per worker process and
moved to the worker's device), makes its video (a synthetic one from its suite and seed;
a dataset's from the arrays or files the driver sends, so workers need no shared file
system), works in a temporary folder and returns what it wrote there. Every task seeds as
the sequential code does, so its results equal the sequential run's for the same seeds;
the headroom check draws from where a sequential pass over the earlier videos would have
left its generator.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2rl_fast.rl.ray.files import agents_here, folder_files, unpack_video

HEADROOM_SAMPLES = 8  # as `training.check_headroom`


@dataclass(frozen=True)
class Synthetic:
    """A synthetic video, made where it is used (as `training.suite_items` makes it)."""

    suite: str
    seed: int
    num_frames: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.seed}"

    def item(self):
        from sam2rl_fast.data.synthetic import generate_video

        v = generate_video(self.suite, self.seed, num_frames=self.num_frames, height=self.size,
                           width=self.size)
        return v.frames, v.masks, self.name


def item_of(job):
    return job.item() if isinstance(job, Synthetic) else job


_MODELS: dict = {}


def worker_model(box, device=None, threads: float = 1):
    """The run's model (`box` = [its object ref]), from the object store once per worker
    process, on `device` (None: cuda where the task was given a GPU)."""
    import ray
    import torch

    from sam2rl_fast.model.loading import resolve_device

    torch.set_num_threads(max(1, int(threads)))  # the CPUs the task holds
    key = box[0].hex()
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = ray.get(box[0])
    model, dev = _MODELS[key], resolve_device(device)
    return model if model.device == dev else model.to(dev)


def headroom_rng(earlier_decisions: int, samples: int = HEADROOM_SAMPLES, capacity: int = 7):
    """`memory_headroom`'s generator after `earlier_decisions` steps over earlier videos."""
    rng = np.random.default_rng(0)
    for _ in range(earlier_decisions):
        rng.integers(0, capacity + 1, samples + 2)
    return rng


def _where() -> dict:
    import ray

    return {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}


def headroom_task(job, box, samples: int, earlier: int, threads: float = 1):
    """The `Headroom` row of one video."""
    from sam2rl_fast.rl.env import prepare_videos
    from sam2rl_fast.rl.headroom import memory_headroom

    model = worker_model(box, "cpu", threads)
    return memory_headroom(prepare_videos([item_of(job)], model, progress=False), model, samples=samples,
                           seed=headroom_rng(earlier, samples), progress=False)[0]


def eval_task(suite: str, seed: int, agents, box, num_frames: int, size: int, split: str = "heldout",
              first_target_only: bool = False, device=None, threads: float = 1):
    """`evaluate_agents` on one synthetic video: (scores, log lines)."""
    from sam2rl_fast.eval.evaluation import evaluate_agents

    model, logs = worker_model(box, device, threads), []
    with tempfile.TemporaryDirectory(prefix="sam2rl-fleet-") as tmp:
        scores = evaluate_agents([suite], agents_here(agents, Path(tmp) / "agents"), model, split=split,
                                 seeds=[seed], num_frames=num_frames, size=size,
                                 first_target_only=first_target_only, log=logs.append)
    return scores, logs


def train_task(cfg, job, box, name: str, earlier: int | None, evaluate: bool, threads: float = 1):
    """One per-video agent: features, the headroom check (unless `earlier` is None), PPO into a
    temporary run folder, and (`evaluate`) the agent against the stock rule and the
    heuristics on its video, as `agent_eval.evaluate_run` does."""
    from sam2rl_fast.rl.agent_eval import HEURISTICS
    from sam2rl_fast.rl.env import prepare_videos
    from sam2rl_fast.rl.features import FeatureCache
    from sam2rl_fast.rl.headroom import memory_headroom
    from sam2rl_fast.rl.training import train_agent

    t0 = time.perf_counter()
    model, logs, row, scores = worker_model(box, cfg.device, threads), [], None, []
    item = item_of(job)
    cache = FeatureCache(model, progress=False)
    if earlier is not None:
        row = memory_headroom(prepare_videos([item], model, cache=cache), model, samples=HEADROOM_SAMPLES,
                              seed=headroom_rng(earlier), progress=False)[0]
    with tempfile.TemporaryDirectory(prefix="sam2rl-fleet-") as tmp:
        agent = train_agent(cfg, [item], model, Path(tmp), name=name, cache=cache, progress=False,
                            log=logs.append)
        if evaluate:
            suite, seed = name.rsplit("-", 1)
            scores, more = eval_task(suite, int(seed), ["sam2", *HEURISTICS, str(agent)], box,
                                     cfg.num_frames, cfg.size, first_target_only=True,
                                     device=cfg.device, threads=threads)
            logs += more
        files = folder_files(Path(tmp))
    return dict(files=files, headroom=row, scores=scores, logs=logs, seconds=time.perf_counter() - t0,
                **_where())


def dataset_task(packed: dict, agents, names: list[str], box, device=None, threads: float = 1):
    """`dataset_eval.track_video` of every agent on one dataset video: (runs, mask files
    relative to the output folder)."""
    from sam2rl_fast.eval.dataset_eval import track_video

    model = worker_model(box, device, threads)
    with tempfile.TemporaryDirectory(prefix="sam2rl-fleet-") as tmp:
        tmp = Path(tmp)
        video = unpack_video(packed, tmp / "video")
        runs = [track_video(video, a, model, tmp / "out" / n, n)
                for a, n in zip(agents_here(agents, tmp / "agents"), names)]
        return runs, folder_files(tmp / "out")
