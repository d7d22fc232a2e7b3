"""A multi-video agent's episodes on Ray actors, behind one SB3 `VecEnv`.

Each `RolloutActor` holds an `EpisodeBatch` over its share of the videos (video i on actor
i mod A: their features are cached there, never in the driver). The driver draws every
episode exactly as `MemoryControlVecEnv` does (same generator, same draws, from the
ground-truth masks it keeps), sends each lane to the actor holding its video, and steps
all actors at once; the PPO learner stays in the driver. For the same seeds the episodes,
rewards and infos are those of `MemoryControlVecEnv`, the observations too up to float
rounding (lanes are batched differently: with one actor they are equal bit for bit).

An actor that dies takes its episodes with it: training stops with Ray's error, and
`--resume` continues from the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from sam2rl_fast.rl.env import BatchedVecEnv, observation_space
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane


class RolloutActor:
    """An `EpisodeBatch` over some videos, stepped by the driver (a Ray actor)."""

    def __init__(self, box, items, kwargs: dict, device=None, threads: float = 1):
        from sam2rl_fast.rl.env import prepare_videos
        from sam2rl_fast.rl.ray.tasks import worker_model

        model = worker_model(box, device, threads)
        self.batch = EpisodeBatch(prepare_videos(items, model, progress=False), model, 1, **kwargs)

    def reset(self, lanes: list[Lane]):
        self.batch.num_lanes = len(lanes)  # this episode's share of the lanes
        return self.batch.reset(lanes)

    def step(self, actions):
        return self.batch.step(np.asarray(actions))

    def close(self):
        self.batch.close()


class _NoFeatures:
    def __init__(self, num_frames: int):
        self.num_frames = num_frames


class LaneSampler:
    """`EpisodeBatch`'s episode draws (and its checks of the videos) from the masks alone;
    `t` and `lanes` follow the actors' batches (what `training.run_state` reads)."""

    sample_lanes = EpisodeBatch.sample_lanes
    _valid_starts = EpisodeBatch._valid_starts

    def __init__(self, items, num_lanes: int, episode_length=None, random_window=False, obj=None):
        self.videos = []
        for i, it in enumerate(items):
            gt = np.asarray(it[1])
            gt = gt[:, None] if gt.ndim == 3 else gt
            self.videos.append(EpisodeVideo(gt.astype(bool), _NoFeatures(len(it[0])),
                                            str(it[2]) if len(it) > 2 else f"video{i}"))
        if not self.videos:
            raise ValueError("no videos to train on")
        lengths = {v.num_frames for v in self.videos}
        if episode_length is None:
            if len(lengths) != 1:
                raise ValueError(f"videos of different lengths {sorted(lengths)}: set episode_length "
                                 "(episodes of a batch advance together)")
            episode_length = lengths.pop()
        short = [v.name for v in self.videos if v.num_frames < episode_length]
        if short:
            raise ValueError(f"videos shorter than episode_length={episode_length}: {short}")
        self.num_lanes, self.L, self.random_window, self.obj = num_lanes, episode_length, random_window, obj
        self.lanes: list[Lane] = []
        self.t = 0


class RayVecEnv(BatchedVecEnv):
    """`MemoryControlVecEnv`'s interface and episodes, the episodes stepped on Ray actors.

    Args: as `MemoryControlVecEnv` (items (video, gt_masks[, name]) as arrays), plus
        options: `RayOptions` (actors, CPUs and GPUs of each); model_ref: the model's
        object ref (None: put `model` into the object store).
    """

    def __init__(self, videos: Sequence, num_envs: int = 8, model=None, *, obj: int | None = None,
                 episode_length: int | None = None, random_window: bool = False, reward: str = "iou",
                 capacity: int = 7, device=None, cache=None, progress: bool = True, seed: int | None = None,
                 options=None, model_ref=None):
        import ray

        from sam2rl_fast.policies.base import obs_size
        from sam2rl_fast.rl.ray import RayOptions, task_slots

        opts = options or RayOptions()
        items = [tuple(it) for it in videos]
        self.batch = LaneSampler(items, num_envs, episode_length, random_window, obj)
        n = opts.actors or min(task_slots(opts), num_envs)
        n = max(1, min(n, len(items)))
        self.home = [(i % n, i // n) for i in range(len(items))]  # video -> (actor, its index there)
        box = [model_ref if model_ref is not None else ray.put(model)]
        kwargs = dict(episode_length=self.batch.L, random_window=random_window, obj=obj, reward=reward,
                      capacity=capacity)
        actor = ray.remote(RolloutActor).options(num_cpus=opts.cpus, num_gpus=opts.gpus, max_restarts=0)
        self.actors = [actor.remote(box, items[a::n], kwargs, device, opts.cpus) for a in range(n)]
        super().__init__(num_envs, observation_space(obs_size(capacity)), gym.spaces.Discrete(capacity + 1))
        self.rng = np.random.default_rng(seed)
        self._actions = None

    def _route(self, lanes) -> list[list[int]]:
        """Lane indices of each actor."""
        per = [[] for _ in self.actors]
        for i, ln in enumerate(lanes):
            per[self.home[ln.video][0]].append(i)
        return per

    def _start(self, lanes: list[Lane]) -> np.ndarray:
        import ray

        if len(lanes) != self.num_envs:
            raise ValueError(f"{len(lanes)} lanes for a batch of {self.num_envs}")
        self.batch.lanes, self.batch.t, self._per = list(lanes), 1, self._route(lanes)
        calls = {a: self.actors[a].reset.remote([Lane(self.home[lanes[i].video][1], lanes[i].obj, lanes[i].start)
                                                 for i in idx]) for a, idx in enumerate(self._per) if idx}
        obs = np.zeros((self.num_envs, self.observation_space.shape[0]), np.float32)
        for a, o in zip(calls, ray.get(list(calls.values()))):
            obs[self._per[a]] = o
        return obs

    def _step(self, actions: np.ndarray):
        import ray

        calls = {a: self.actors[a].step.remote(actions[idx]) for a, idx in enumerate(self._per) if idx}
        obs = np.zeros((self.num_envs, self.observation_space.shape[0]), np.float32)
        rewards, infos, done = np.zeros(self.num_envs, np.float32), [None] * self.num_envs, False
        for a, (o, r, d, inf) in zip(calls, ray.get(list(calls.values()))):
            idx = self._per[a]
            obs[idx], rewards[idx], done = o, r, d
            for i, info in zip(idx, inf):
                infos[i] = info
        self.batch.t += 1
        return obs, rewards, done, infos

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []
