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


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def sent_agents(agents) -> list:
    """Agents as tasks get them: built-in names as they are, files as (name, bytes)."""
    return [(Path(a).name, Path(a).read_bytes()) if isinstance(a, (str, Path)) and Path(a).is_file()
            else a for a in agents]


def _agents_here(agents, folder: Path) -> list:
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for a in agents:
        if isinstance(a, tuple):  # (file name, bytes), as `sent_agents` sends a file
            (folder / a[0]).write_bytes(a[1])
            a = str(folder / a[0])
        out.append(a)
    return out


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
        scores = evaluate_agents([suite], _agents_here(agents, Path(tmp) / "agents"), model, split=split,
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


# ----------------------------------------------------------------- dataset videos
def pack_video(video) -> dict:
    """A `DatasetVideo`'s files as bytes (frames and annotations, as stored: compressed)."""
    if video.layout == "sav":
        ann = {f: {o: (p.name, p.read_bytes()) for o, p in per.items()} for f, per in video.annotations.items()}
    else:
        ann = {f: (p.name, p.read_bytes()) for f, p in video.annotations.items()}
    return {"name": video.name, "layout": video.layout, "annotations": ann,
            "frames": [(p.name, p.read_bytes()) for p in video.frames]}


def unpack_video(packed: dict, root: Path):
    """The `DatasetVideo` of `pack_video`'s files, written under `root`."""
    from sam2rl_fast.data.datasets import DatasetVideo

    def put(sub: str, name: str, data: bytes) -> Path:
        path = root / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    frames = [put("frames", n, d) for n, d in packed["frames"]]
    if packed["layout"] == "sav":
        ann = {f: {o: put(f"annotations/{o:03d}", *nd) for o, nd in per.items()}
               for f, per in packed["annotations"].items()}
    else:
        ann = {f: put("annotations", *nd) for f, nd in packed["annotations"].items()}
    return DatasetVideo(packed["name"], frames, packed["layout"], ann)


def dataset_task(packed: dict, agents, names: list[str], box, device=None, threads: float = 1):
    """`dataset_eval.track_video` of every agent on one dataset video: (runs, mask files
    relative to the output folder)."""
    from sam2rl_fast.eval.dataset_eval import track_video

    model = worker_model(box, device, threads)
    with tempfile.TemporaryDirectory(prefix="sam2rl-fleet-") as tmp:
        tmp = Path(tmp)
        video = unpack_video(packed, tmp / "video")
        runs = [track_video(video, a, model, tmp / "out" / n, n)
                for a, n in zip(_agents_here(agents, tmp / "agents"), names)]
        return runs, folder_files(tmp / "out")
