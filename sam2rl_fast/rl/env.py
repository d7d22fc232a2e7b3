"""Memory control as a gymnasium environment, and N of them as one batched SB3 `VecEnv`.

`MemoryControlEnv` is the single-episode gymnasium API (for `check_env`, tutorials and
any RL library); `MemoryControlVecEnv` steps N episodes as one batch through the model
(`EpisodeBatch`), which is what training uses: one process, one model, N lanes. Both run
on cached backbone features (`FeatureCache`), so the image encoder runs once per video.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane
from sam2rl_fast.rl.features import FeatureCache
from sam2rl_fast.tracking.video import open_video


def read_frames(video) -> np.ndarray:
    """All frames [T, H, W, 3] uint8 of anything `open_video` takes."""
    if isinstance(video, np.ndarray) and video.ndim == 4:
        return video
    frames = list(open_video(video))
    return np.stack(frames)


def prepare_videos(items, model, *, cache: FeatureCache | None = None, cache_dir=None,
                   progress: bool = True) -> list[EpisodeVideo]:
    """`EpisodeVideo`s (features cached) for items (video, gt_masks) or (video, gt_masks, name)."""
    cache = cache or FeatureCache(model, cache_dir, progress=progress)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, EpisodeVideo):
            out.append(item)
            continue
        video, gt = item[0], item[1]
        name = item[2] if len(item) > 2 else (video if isinstance(video, str) else f"video{i}")
        frames = read_frames(video)
        gt = np.asarray(gt)
        if gt.ndim == 3:
            gt = gt[:, None]
        if gt.ndim != 4 or gt.shape[0] != len(frames) or gt.shape[-2:] != frames.shape[1:3]:
            raise ValueError(f"{name}: gt_masks must be bool [T, n_obj, H, W] matching the video "
                             f"[{len(frames)}, {frames.shape[1]}, {frames.shape[2]}], got {list(gt.shape)}")
        out.append(EpisodeVideo(gt.astype(bool), cache.get(frames, str(name)), str(name)))
    return out


def observation_space(obs_dim: int) -> gym.spaces.Box:
    # Unbounded: predicted IoUs may leave [0, 1]; every other feature is normalised (docs).
    return gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)


class MemoryControlEnv(gym.Env):
    """One memory-control episode at a time (gymnasium API).

    Args:
        video: anything `FastTracker` takes; gt_masks: bool [T, n_obj, H, W] (or [T, H, W]).
        model: as `FastTracker` takes it (None: the bundled demo model).
        obj, episode_length, random_window, reward, capacity: see `EpisodeBatch`.
    `reset(options={"start": s, "obj": o})` starts a given window.
    """

    metadata = {"render_modes": []}

    def __init__(self, video, gt_masks, model=None, *, obj: int | None = None,
                 episode_length: int | None = None, random_window: bool = False, reward: str = "iou",
                 capacity: int = 7, device=None, config: str | None = None, image_size: int | None = None,
                 fast_attention: bool | None = None, cache_dir=None, progress: bool = True):
        self.model = build_model(model, config=config, device=device, image_size=image_size)
        videos = prepare_videos([(video, gt_masks, "video")], self.model, cache_dir=cache_dir,
                                progress=progress)
        self.batch = EpisodeBatch(videos, self.model, 1, episode_length=episode_length,
                                  random_window=random_window, obj=obj, reward=reward,
                                  capacity=capacity, fast_attention=fast_attention)
        self.observation_space = observation_space(self.batch.obs_dim)
        self.action_space = gym.spaces.Discrete(capacity + 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "start" in options or "obj" in options:
            lane = Lane(0, int(options.get("obj", self.batch.obj or 0)), int(options.get("start", 0)))
            if not self.batch.videos[0].masks[lane.start, lane.obj].any():
                raise ValueError(f"object {lane.obj} is not visible on frame {lane.start}")
        else:
            lane = self.batch.sample_lanes(self.np_random)[0]
        obs = self.batch.reset([lane])[0]
        return obs, {"video": self.batch.videos[0].name, "obj": lane.obj, "start": lane.start}

    def step(self, action):
        obs, rewards, done, infos = self.batch.step(np.asarray([action]))
        return obs[0], float(rewards[0]), bool(done), False, infos[0]

    def close(self):
        self.batch.close()


class BatchedVecEnv(VecEnv):
    """An SB3 `VecEnv` whose N episodes advance as one batch: subclasses start episodes on
    lanes (`_start`) and step them all (`_step`); every episode ends and restarts together."""

    render_mode = None

    def _start(self, lanes: list[Lane]) -> np.ndarray:
        raise NotImplementedError

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, list[dict]]:
        raise NotImplementedError

    def reset(self, lanes: list[Lane] | None = None, reseed: bool = True) -> np.ndarray:
        """New episodes (on `lanes`, or drawn); a seed given through `seed()` restarts the
        draws unless `reseed` is False (a resumed run restores its generator instead)."""
        if reseed and self._seeds[0] is not None:
            self.rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        return self._start(lanes if lanes is not None else self.batch.sample_lanes(self.rng))

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, done, infos = self._step(self._actions)
        dones = np.full(self.num_envs, done)
        if done:  # all episodes end together: record their last observation, start new ones
            for i, info in enumerate(infos):
                info["terminal_observation"] = obs[i]
                info["TimeLimit.truncated"] = False
            obs = self._start(self.batch.sample_lanes(self.rng))
        return obs, rewards, dones, infos

    # The N episodes live in this one object: attribute access is shared by all indices.
    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._get_indices(indices)]


class MemoryControlVecEnv(BatchedVecEnv):
    """N memory-control episodes stepped as one batch (a natively batched SB3 `VecEnv`).

    Args:
        videos: items (video, gt_masks[, name]) or `EpisodeVideo`s; episodes sample a
            video uniformly (one video: the paper's per-video training).
        num_envs: episodes per batch. Other arguments: see `EpisodeBatch`.
    All episodes have the same length, so they end together and restart together.
    """

    def __init__(self, videos: Sequence, num_envs: int = 8, model=None, *, obj: int | None = None,
                 episode_length: int | None = None, random_window: bool = False, reward: str = "iou",
                 capacity: int = 7, device=None, config: str | None = None, image_size: int | None = None,
                 fast_attention: bool | None = None, cache: FeatureCache | None = None, cache_dir=None,
                 progress: bool = True, seed: int | None = None):
        self.model = build_model(model, config=config, device=device, image_size=image_size)
        eps = prepare_videos(list(videos), self.model, cache=cache, cache_dir=cache_dir, progress=progress)
        self.batch = EpisodeBatch(eps, self.model, num_envs, episode_length=episode_length,
                                  random_window=random_window, obj=obj, reward=reward,
                                  capacity=capacity, fast_attention=fast_attention)
        super().__init__(num_envs, observation_space(self.batch.obs_dim), gym.spaces.Discrete(capacity + 1))
        self.rng = np.random.default_rng(seed)
        self._actions = None

    def _start(self, lanes: list[Lane]) -> np.ndarray:
        return self.batch.reset(lanes)

    def _step(self, actions: np.ndarray):
        return self.batch.step(actions)

    def close(self) -> None:
        self.batch.close()
