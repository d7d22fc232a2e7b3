"""N memory-control episodes stepped together on cached features.

Every episode is a lane of one `TrackingStep`: the batch goes through the memory
attention, SAM heads and memory encoder once per step, whatever N, and the image encoder
never runs (features come from `FeatureCache`). Lanes start and end together (all
episodes have the same length), so one bank frame counter serves them all: lane i's
local frame t is frame ``start_i + t`` of its video.

The MDP (docs/rl-environment.md): frame 0 of the window is prompted with the target's
ground-truth mask; the observation at step t describes the bank and frame t's candidate
memory; the action stores the candidate (slot k-1 for action k) or drops it (0); frame
t+1 is then segmented with the updated bank and its IoU with the ground truth is the
reward (minus the stock rule's IoU on that frame with ``reward="improvement"``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.eval.metrics import iou as region_iou
from sam2rl_fast.policies.base import RecencyReadRule, obs_size
from sam2rl_fast.policies.learned import actions_to_slots
from sam2rl_fast.policies.stock import Sam2Policy
from sam2rl_fast.rl.features import VideoFeatures, stack_lanes
from sam2rl_fast.tracking.driver import TrackingSetup
from sam2rl_fast.tracking.prompts import Prompt
from sam2rl_fast.tracking.step import check_precision, video_masks

REWARDS = ("iou", "improvement")


@dataclass
class EpisodeVideo:
    """A training video: ground truth [T, n_obj, H, W] bool and its cached features."""

    masks: np.ndarray
    features: VideoFeatures
    name: str = "video"

    def __post_init__(self):
        m = np.asarray(self.masks)
        if m.ndim == 3:  # one object
            m = m[:, None]
        if m.ndim != 4 or m.dtype != bool:
            raise ValueError(f"{self.name}: gt_masks must be bool [T, n_obj, H, W], "
                             f"got {m.dtype} {list(np.shape(self.masks))}")
        if m.shape[0] != self.features.num_frames:
            raise ValueError(f"{self.name}: {m.shape[0]} ground-truth frames for a video of "
                             f"{self.features.num_frames} frames")
        self.masks = m

    @property
    def num_frames(self) -> int:
        return self.masks.shape[0]


@dataclass(frozen=True)
class Lane:
    video: int
    obj: int
    start: int


class EpisodeBatch:
    """`num_lanes` episodes over `videos`, stepped as one batch.

    Args:
        episode_length: frames per episode, prompt frame included (None: the videos'
            length, which must then be equal). At least 3 (a decision needs a next frame).
        random_window: episodes start at a random frame where the target is visible
            (else at frame 0).
        obj: the object to track (None: a random object visible on the start frame).
        reward: "iou" (next frame's IoU) or "improvement" (minus the stock rule's IoU on
            that frame, from a stock run of the same window, computed once and cached).
        precision: "fp32" or "bf16" (the model under bf16 autocast, as
            `FastTracker(precision="bf16")`; the stock IoUs of "improvement" too).
    """

    def __init__(self, videos: list[EpisodeVideo], model, num_lanes: int = 1, *,
                 episode_length: int | None = None, random_window: bool = False,
                 obj: int | None = None, reward: str = "iou", capacity: int = 7,
                 fast_attention: bool | None = None, fast_linears: bool = True, precision: str = "fp32"):
        check_precision(precision)
        if not videos:
            raise ValueError("no videos to train on")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        lengths = {v.num_frames for v in videos}
        if episode_length is None:
            if len(lengths) != 1:
                raise ValueError(f"videos of different lengths {sorted(lengths)}: set episode_length "
                                 "(episodes of a batch advance together)")
            episode_length = lengths.pop()
        if episode_length < 3:
            raise ValueError(f"episode_length {episode_length} < 3: an episode needs a prompt "
                             "frame, a decision and a next frame to reward it")
        short = [v.name for v in videos if v.num_frames < episode_length]
        if short:
            raise ValueError(f"videos shorter than episode_length={episode_length}: {short}")
        if obj is not None:
            bad = [v.name for v in videos if not 0 <= obj < v.masks.shape[1]]
            if bad:
                raise ValueError(f"object {obj} does not exist in {bad}")
        self.videos, self.model, self.num_lanes = videos, model, num_lanes
        self.L, self.random_window, self.obj, self.reward = episode_length, random_window, obj, reward
        self.capacity = capacity
        # FastTracker's setup: the memory attention, oneDNN-packed Linears and cached encodings
        # for the whole life of the batch (restored by close()); in bf16 the model runs under
        # autocast around each call (`_precision`), on packed bf16 weights.
        self.setup = TrackingSetup(model, fast_attention=fast_attention, fast_linears=fast_linears,
                                   precision=precision)
        self.attention_impl, self.precision = self.setup.attention_impl, precision
        self.step_ = self.setup.step(capacity)
        self.read_rule = RecencyReadRule(self.step_.stock)
        self.obs_dim = obs_size(capacity)
        self._stock_ious: dict[Lane, np.ndarray] = {}
        self._exit = contextlib.ExitStack()
        self._exit.enter_context(self.setup.running())
        self.lanes: list[Lane] = []
        self.t = 0

    def close(self) -> None:
        self._exit.close()

    def _precision(self):
        """The model's work of one call in `precision` (as FastTracker's frames)."""
        return self.setup.autocast()

    # ------------------------------------------------------------------ episodes
    def _valid_starts(self, v: EpisodeVideo, obj: int | None) -> list[tuple[int, int]]:
        last = v.num_frames - self.L if self.random_window else 0
        vis = v.masks[: last + 1].any(axis=(-2, -1))  # [starts, n_obj]
        objs = range(v.masks.shape[1]) if obj is None else [obj]
        return [(s, o) for s in range(last + 1) for o in objs if vis[s, o]]

    def sample_lanes(self, rng: np.random.Generator) -> list[Lane]:
        lanes = []
        for _ in range(self.num_lanes):
            vi = int(rng.integers(len(self.videos)))
            starts = self._valid_starts(self.videos[vi], self.obj)
            if not starts:
                raise ValueError(f"{self.videos[vi].name}: the target is not visible on any "
                                 "frame an episode can start from")
            s, o = starts[int(rng.integers(len(starts)))]
            lanes.append(Lane(vi, o, s))
        return lanes

    def _features(self, t: int, lanes=None):
        lanes = self.lanes if lanes is None else lanes
        if len({ln.video for ln in lanes}) == 1:  # one gather (per-video training)
            return self.videos[lanes[0].video].features.frames([ln.start + t for ln in lanes])
        return stack_lanes([self.videos[ln.video].features.frames([ln.start + t]) for ln in lanes])

    def _gt(self, lane: Lane, t: int) -> np.ndarray:
        return self.videos[lane.video].masks[lane.start + t, lane.obj]

    def _video_masks(self, low: torch.Tensor, lanes) -> list[np.ndarray]:
        """Low-res logits [N,1,h,w] -> bool masks at each lane's video resolution (as FastTracker)."""
        return [video_masks(low[b:b + 1], self.videos[ln.video].masks.shape[-2:])[0]
                for b, ln in enumerate(lanes)]

    @torch.inference_mode()
    def reset(self, lanes: list[Lane]) -> np.ndarray:
        """Start an episode per lane: prompt frame 0, segment frame 1; observations [N, D]."""
        if len(lanes) != self.num_lanes:
            raise ValueError(f"{len(lanes)} lanes for a batch of {self.num_lanes}")
        self.lanes, self.t = list(lanes), 0
        if self.reward == "improvement":
            self._ensure_stock(self.lanes)
        st = self.step_
        st.reset(self.num_lanes)
        H, W = self.videos[lanes[0].video].masks.shape[-2:]
        prompts = [Prompt("mask", mask=self._gt(ln, 0)) for ln in lanes]
        self.episode_ious = [[] for _ in lanes]
        with self._precision():
            st.prompt(0, self._features(0), prompts, (H, W), self.L)
            return self._advance()

    def _advance(self) -> np.ndarray:
        """Segment and encode frame t+1, return its observations; sets self.ious (frame t+1)."""
        st = self.step_
        self.t += 1
        fs = st.advance(self.t, self._features(self.t), self.read_rule, self.L)
        self.head, self.mem, self.obs = fs.head, fs.mem, fs.obs
        self.masks = self._video_masks(self.head.low_res_masks, self.lanes)
        self.ious = np.array([float(region_iou(m, self._gt(ln, self.t)))
                              for m, ln in zip(self.masks, self.lanes)])
        return self.obs.vector()

    @torch.inference_mode()
    def step(self, actions) -> tuple[np.ndarray, np.ndarray, bool, list[dict]]:
        """Apply one action per lane; (next observations, rewards, done, infos).

        When done, the observations are the final frame's (no decision follows them)."""
        if not self.lanes:
            raise RuntimeError("reset() the episodes before stepping them")
        if self.t >= self.L - 1:
            raise RuntimeError("the episodes are over: reset() them")
        slots = actions_to_slots(actions, self.obs.slot_is_cond, self.capacity)
        with self._precision():
            self.step_.store(self.t, self.head, self.mem, slots.tolist(), observed=True)
            obs = self._advance()
        ious = self.ious
        stock = np.array([self._stock_ious[ln][self.t] for ln in self.lanes]) \
            if self.reward == "improvement" else None
        rewards = ious - stock if stock is not None else ious.copy()
        done = self.t >= self.L - 1
        infos = []
        for i, ln in enumerate(self.lanes):
            self.episode_ious[i].append(ious[i])
            info = {"iou": float(ious[i]), "frame": ln.start + self.t, "slot": int(slots[i]),
                    "video": self.videos[ln.video].name, "obj": ln.obj}
            if stock is not None:
                info["stock_iou"] = float(stock[i])
            if done:
                info["episode_iou"] = float(np.mean(self.episode_ious[i]))
                if stock is not None:
                    info["stock_episode_iou"] = float(np.mean(self._stock_ious[ln][2:]))
            infos.append(info)
        return obs, rewards.astype(np.float32), done, infos

    # ------------------------------------------------------------------ the stock rule's IoUs
    @torch.inference_mode()
    def stock_ious(self, lanes: list[Lane]) -> np.ndarray:
        """[len(lanes), L] IoU per frame of each window tracked with the stock rule (cached)."""
        self._ensure_stock(lanes)
        return np.stack([self._stock_ious[ln] for ln in lanes])

    def _ensure_stock(self, lanes) -> None:
        todo = list(dict.fromkeys(ln for ln in lanes if ln not in self._stock_ious))
        if not todo:
            return
        with self._precision():
            self._track_stock(todo)

    def _track_stock(self, todo) -> None:
        """The windows of `todo` tracked as `FastTracker(agent="sam2")` tracks them: a step of
        this setup with the stock policy, one lane per window."""
        st, policy = self.setup.step(self.capacity), Sam2Policy()
        st.reset(len(todo))
        policy.reset(len(todo), self.capacity, st.stock)
        H, W = self.videos[todo[0].video].masks.shape[-2:]
        st.prompt(0, self._features(0, todo), [Prompt("mask", mask=self._gt(ln, 0)) for ln in todo],
                  (H, W), self.L)
        out = np.ones((len(todo), self.L))
        for t in range(1, self.L):
            head, _ = st.track(t, self._features(t, todo), policy, self.L)
            masks = self._video_masks(head.low_res_masks, todo)
            out[:, t] = [float(region_iou(m, self._gt(ln, t))) for m, ln in zip(masks, todo)]
        for ln, row in zip(todo, out):
            self._stock_ious[ln] = row
