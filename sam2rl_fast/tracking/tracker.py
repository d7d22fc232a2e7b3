"""`FastTracker`: SAM 2 video object tracking on the fast path, memory decided by a policy.

Per frame, for all objects at once (upstream tracks them one at a time):
image encoder (once) -> bank gather -> memory attention -> SAM heads -> memory encoder
-> policy -> bank append. Memory is the bank's fixed capacity whatever the video length,
frames are decoded one at a time and dropped after use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from sam2rl_fast.model.cpu_linear import packed_linears
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import make_policy
from sam2rl_fast.tracking.step import (
    Prompt,
    TrackingStep,
    pick_memory_attention,
    video_masks,
)
from sam2rl_fast.tracking.video import open_video

# Per-frame timings (ms). "frame" is the whole step after decoding, recorded instead of the
# stages when they are not timed one by one (profile=False: no CUDA sync between stages).
STAGES = ("decode", "preprocess", "image_encoder", "memory_attention", "sam_heads", "memory_encoder",
          "policy", "frame")


class PromptError(ValueError):
    """A prompt that does not fit the video or names no object."""


@dataclass
class TrackedFrame:
    index: int
    masks: np.ndarray  # [n_obj, H, W] bool at video resolution
    scores: np.ndarray  # [n_obj] object-score logits (> 0: object present)
    ious: np.ndarray  # [n_obj] predicted IoU of the output masks
    decisions: np.ndarray  # [n_obj] slot the frame's memory went to, -1 = not stored
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    image: np.ndarray | None = None  # [H, W, 3] the frame itself (streaming only; run() drops it)


@dataclass
class TrackingResult:
    obj_ids: list
    masks: np.ndarray  # [T, n_obj, H, W] bool
    scores: np.ndarray  # [T, n_obj]
    ious: np.ndarray  # [T, n_obj]
    decisions: np.ndarray  # [T, n_obj] (-2 = frame not tracked)
    timings: dict[str, np.ndarray]  # stage -> [T] ms
    tracked: np.ndarray  # [T] bool: frames the tracker produced (from the prompt frame on)

    @property
    def fps(self) -> float:
        total = sum(v[self.tracked].sum() for v in self.timings.values())
        return float(self.tracked.sum() / (total / 1000.0)) if total > 0 else float("nan")


def mask_from_array(a: np.ndarray, what: str) -> np.ndarray:
    """A mask prompt as bool [H, W], by one rule: bool as it is; integers 0 / nonzero (one
    object: a label image with several ids is refused); floats are probabilities in [0, 1],
    the object where >= 0.5 (so a soft mask with 0.01 background is the object, not the
    frame). NaN and values outside those ranges are errors."""
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        ids = np.unique(a[a != 0])
        if len(ids) > 1:
            raise PromptError(f"{what}: the mask holds several ids {ids[:8].tolist()}; give one "
                              "mask per object (e.g. label == k)")
        if (a < 0).any():
            raise PromptError(f"{what}: mask values must be 0 (background) or one id, got negatives")
        return a != 0
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise PromptError(f"{what}: the mask holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise PromptError(f"{what}: a float mask holds probabilities in [0, 1] (object where "
                              f">= 0.5), got values in [{lo:g}, {hi:g}]")
        return a >= 0.5
    raise PromptError(f"{what}: a mask must be bool, integer or float, got {a.dtype}")


def _parse_prompt(p, H: int, W: int, obj) -> Prompt:
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().numpy()
    if isinstance(p, np.ndarray) and p.ndim == 2:
        if p.shape != (H, W):
            raise PromptError(f"object {obj!r}: mask is {p.shape[1]}x{p.shape[0]}, the video {W}x{H}")
        m = mask_from_array(p, f"object {obj!r}")
        if not m.any():
            raise PromptError(f"object {obj!r}: the prompt mask is empty")
        return Prompt("mask", mask=m)
    if isinstance(p, (tuple, list, np.ndarray)) and len(p) == 4 and np.isscalar(p[0]):
        x0, y0, x1, y1 = (float(v) for v in p)
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise PromptError(f"object {obj!r}: box {tuple(p)} is not a box (x0 < x1, y0 < y1) "
                              f"inside the {W}x{H} frame")
        return Prompt("box", points=np.array([[x0, y0], [x1, y1]], np.float32),
                      labels=np.array([2, 3], np.int32))
    if isinstance(p, (tuple, list)) and len(p) == 2:
        pts = np.asarray(p[0], np.float32).reshape(-1, 2)
        lab = np.asarray(p[1], np.int32).reshape(-1)
        if len(pts) == 0 or len(pts) != len(lab):
            raise PromptError(f"object {obj!r}: {len(pts)} points with {len(lab)} labels")
        if ((pts < 0) | (pts > [W, H])).any():
            raise PromptError(f"object {obj!r}: points {pts.tolist()} lie outside the {W}x{H} frame")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"object {obj!r}: point labels must be 1 (object) or 0 (background)")
        return Prompt("points", points=pts, labels=lab)
    raise PromptError(f"object {obj!r}: a prompt is a bool mask [H, W], a box (x0, y0, x1, y1) "
                      f"or (points [N, 2], labels [N]); got {type(p).__name__}")


def _split_prompt(prompt) -> tuple[int, dict, dict]:
    """(first prompted frame, {obj: p} on it, {later frame: {obj: p}} corrections)."""
    if not isinstance(prompt, dict) or not prompt:
        raise PromptError("prompt must be a non-empty dict {obj_id: mask | box | (points, labels)} "
                          "or {frame_idx: {obj_id: ...}}")
    if not all(isinstance(v, dict) for v in prompt.values()):
        return 0, prompt, {}
    frames = {int(f): v for f, v in sorted(prompt.items()) if v}
    if not frames:
        raise PromptError("every frame's prompt dict is empty: name at least one object")
    first, *later = frames
    if first < 0:
        raise PromptError(f"prompt frame {first} is negative")
    known = set(frames[first])
    for f in later:
        unknown = sorted(set(frames[f]) - known, key=str)
        if unknown:  # an object that does not exist when tracking starts
            raise PromptError(f"prompt for unknown object(s) {unknown} on frame {f}: every "
                              f"object starts on the first prompted frame ({first}), where "
                              f"the objects are {sorted(known, key=str)}")
    return first, frames[first], {f: frames[f] for f in later}


class FastTracker:
    """Track objects through a video with SAM 2 and a memory policy.

    Args:
        video: a video file, a folder of JPEG/PNG frames, an array [T, H, W, 3] or an
            iterable of frames (a stream).
        agent: the memory policy: "sam2" (stock rule, exactly), "samurai", "dam4sam", a
            `MemoryPolicy`, or a trained agent file: `.zip` (`sam2rl-fast train`) or
            `.onnx` (`sam2rl-fast export`), refused if trained for another layout or model.
        model: a Meta checkpoint path, a sam2 config name (random weights), a sam2 model,
            or None for the bundled demo model.
        prompt: {obj_id: p} on frame 0, or {frame_idx: {obj_id: p}}; p is a bool mask [H, W],
            a box (x0, y0, x1, y1) or (points [N, 2], labels [N]), in video pixels. Every
            object starts on the first prompted frame; prompts on later frames correct
            objects there (a new conditioning memory each, as stock's prompts on frames it
            has not tracked yet).
        device: where to run (default: CUDA if available).
        capacity: memory slots per object (stock SAM 2 reads 1 prompt + 6 recent = 7).
        fast_attention: use sam2rl-fast's fused memory attention (default None: on the CPU,
            where it is faster than stock; stock's on GPUs until the tensor-core kernel lands).
        fast_linears: on the CPU, run the model's fp32 Linear layers through oneDNN's
            prepacked kernels while tracking (see `sam2rl_fast.model.cpu_linear`).
        num_frames: the length of a stream whose length is unknown (a generator, a camera).
            SAM 2 normalises object-pointer distances by min(num_frames, 16): without it a
            stream shorter than 16 frames gets slightly different masks than the same frames
            given as an array. Ignored when the video's length is known.
        progress: show a progress bar with FPS.
        profile: time every stage (each timing waits for the GPU to finish, so stages do
            not overlap with the host's work); default: on the CPU, where it costs nothing,
            not on GPUs, where frames are timed whole.
    """

    def __init__(self, video, agent="sam2", model=None, prompt=None, device=None, *,
                 config: str | None = None, image_size: int | None = None, capacity: int = 7,
                 fast_attention: bool | None = None, fast_linears: bool = True, progress: bool = False,
                 profile: bool | None = None, num_frames: int | None = None):
        self.video = open_video(video)
        if num_frames is not None:
            if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
                raise PromptError(f"num_frames must be a positive int, got {num_frames!r}")
            if self.video.num_frames is None:
                self.video.num_frames = num_frames
        self.model = build_model(model, config=config, device=device, image_size=image_size)
        self.device = self.model.device
        self.policy = make_policy(agent)
        self.policy.check_model(self.model)  # learned agents: trained for this kind of model?
        self.H, self.W = self.video.height, self.video.width
        self.prompt_frame, objs, later = _split_prompt(prompt)
        self.obj_ids = list(objs)
        self.prompts = [_parse_prompt(objs[o], self.H, self.W, o) for o in self.obj_ids]
        # Corrections: {frame: [Prompt | None per object]}, each a new conditioning memory.
        self.corrections = {f: [_parse_prompt(c[o], self.H, self.W, o) if o in c else None
                                for o in self.obj_ids] for f, c in later.items()}
        if self.corrections and not self.policy.fixed_capacity:
            # Each correction frame pins one more memory per object; the stock rule still
            # needs its 6 recent ones. (A learned agent's bank size is its layout's: there,
            # corrections take replaceable slots.)
            capacity += len(self.corrections)
        n = self.video.num_frames
        if n is not None and self.prompt_frame >= n:
            raise PromptError(f"prompt on frame {self.prompt_frame}, the video has {n} frames")
        late = [f for f in self.corrections if n is not None and f >= n]
        if late:
            raise PromptError(f"correction prompt on frame {late[0]}, the video has {n} frames "
                              f"(frames 0..{n - 1})")
        self.capacity, self.progress, self.fast_linears = capacity, progress, fast_linears
        self.profile = self.device.type == "cpu" if profile is None else bool(profile)
        self.memory_attention, self.attention_impl = pick_memory_attention(self.model, fast_attention)
        self.step = TrackingStep(self.model, self.memory_attention, capacity)

    # ------------------------------------------------------------------ public API
    def __iter__(self) -> Iterator[TrackedFrame]:
        return self._track()

    def run(self) -> TrackingResult:
        """Track every frame; masks [T, n_obj, H, W] at video resolution.

        The masks of the whole video are kept (T x n_obj x H x W bytes: 8 GB for 1,000
        1080p frames of 4 objects): for long videos iterate over the tracker instead, which
        keeps nothing."""
        frames = []
        for fr in self._track(include_untracked=True):
            fr.image = None  # keep masks, not the video
            frames.append(fr)
        T, n = len(frames), len(self.obj_ids)
        tracked = np.array([bool(f.timings) for f in frames])
        return TrackingResult(
            obj_ids=self.obj_ids,
            masks=np.stack([f.masks for f in frames]) if T else np.zeros((0, n, self.H, self.W), bool),
            scores=np.stack([f.scores for f in frames]) if T else np.zeros((0, n)),
            ious=np.stack([f.ious for f in frames]) if T else np.zeros((0, n)),
            decisions=np.stack([f.decisions for f in frames]) if T else np.zeros((0, n), int),
            timings={s: np.array([f.timings.get(s, 0.0) for f in frames]) for s in STAGES},
            tracked=tracked,
        )

    # ------------------------------------------------------------------ the per-frame path
    @torch.inference_mode()
    def _track(self, include_untracked: bool = False) -> Iterator[TrackedFrame]:
        B = len(self.obj_ids)
        step = self.step
        step.reset(B, extra_cond=len(self.corrections))
        self.bank = step.bank
        self.policy.reset(B, self.capacity, step.stock)
        T = self.video.num_frames
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=T, desc=f"tracking ({self.policy.name})", unit="frame")
        t_prev = time.perf_counter()
        # The model's Linear layers run through oneDNN while tracking, restored afterwards.
        linears = packed_linears(self.model, enabled=self.fast_linears and self.device.type == "cpu")
        try:
            with linears:
                f = -1
                for f, frame in enumerate(self.video):
                    decode_ms = (time.perf_counter() - t_prev) * 1e3
                    if f < self.prompt_frame:
                        if include_untracked:
                            yield TrackedFrame(f, np.zeros((B, self.H, self.W), bool), np.full(B, np.nan),
                                               np.full(B, np.nan), np.full(B, -2))
                        t_prev = time.perf_counter()
                        continue
                    t_frame = time.perf_counter()
                    timings = {"decode": decode_ms}
                    tm = timings if self.profile else None  # None: stages are not timed
                    feats = step.expand(step.encode_image(frame, tm), B)
                    if f == self.prompt_frame:
                        _, low, score, iou, slots = step.prompt(f, feats, self.prompts, (self.H, self.W),
                                                                T, tm)
                        out = self._output(f, low, score, iou, slots)
                    elif f in self.corrections:
                        out = self._correction_step(f, feats, T, tm, self.corrections[f])
                    else:
                        out = self._track_step(f, feats, T, tm)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    if not self.profile:
                        timings["frame"] = (time.perf_counter() - t_frame) * 1e3
                    out.timings, out.image = timings, frame
                    if bar is not None:
                        bar.update(1)
                        total = sum(timings.values())
                        bar.set_postfix(fps=f"{1000.0 / total:.1f}" if total else "-")
                    t_prev = time.perf_counter()
                    yield out
            # a stream (no length known up front) that ended before a prompted frame
            seen = f + 1
            missed = [g for g in (self.prompt_frame, *self.corrections) if g >= seen]
            if missed:
                raise PromptError(f"{self.video.name} ended after {seen} frame(s), before the "
                                  f"prompt on frame {missed[0]}")
        finally:
            if bar is not None:
                bar.close()

    def _decide(self, f, feats, T, tm, fixed=frozenset()):
        """The frame's step and the policy's slots (-1 for lanes in `fixed`, which a
        correction prompt stores instead)."""
        step, policy = self.step, self.policy
        fs = step.advance(f, feats, policy.read_rule, T, choose=policy.choose_mask,
                          observe=policy.needs_observation, motion=policy.motion_scores, tm=tm)
        with step.timed(tm, "policy"):
            slots = [-1 if b in fixed else s for b, s in enumerate(policy.assign(step.bank, f, fs.obs))]
            step.store(f, fs.head, fs.mem, slots, observed=fs.obs is not None, skip_pointers=fixed)
        return fs, slots

    def _track_step(self, f, feats, T, tm) -> TrackedFrame:
        fs, slots = self._decide(f, feats, T, tm)
        head = fs.head
        return self._output(f, head.low_res_masks, head.object_score_logits.reshape(-1),
                            head.chosen_iou, np.asarray(slots))

    def _correction_step(self, f, feats, T, tm, prompts) -> TrackedFrame:
        """A frame with corrections: prompted objects get their prompt's output and a new
        conditioning memory (as stock's add_new_mask / add_new_points_or_box on a frame it
        has not tracked yet, then propagating on); the others are tracked as usual."""
        fixed = frozenset(b for b, p in enumerate(prompts) if p is not None)
        fs, slots = self._decide(f, feats, T, tm, fixed)
        head = fs.head
        lanes, low, score, iou, cslots = self.step.prompt(f, feats, prompts, (self.H, self.W), T, tm)
        idx = torch.tensor(lanes, device=low.device)
        out_low = head.low_res_masks.float().index_copy(0, idx, low.float())
        out_score = head.object_score_logits.reshape(-1).float().index_copy(0, idx, score.float())
        out_iou = head.chosen_iou.float().index_copy(0, idx, iou.float())
        slots = np.asarray(slots)
        slots[lanes] = cslots
        return self._output(f, out_low, out_score, out_iou, slots)

    def _output(self, f, low, score, iou, slots) -> TrackedFrame:
        return TrackedFrame(f, video_masks(low, (self.H, self.W)), score.float().cpu().numpy(),
                            iou.float().cpu().numpy(), slots.astype(np.int64))
