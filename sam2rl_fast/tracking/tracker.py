"""`FastTracker`: SAM 2 video object tracking on the fast path, memory decided by a policy.

Per frame, for all objects at once (upstream tracks them one at a time):
image encoder (once) -> bank gather -> memory attention -> SAM heads -> memory encoder
-> policy -> bank append. Memory is the bank's fixed capacity whatever the video length,
frames are decoded one at a time and dropped after use. Objects that start on a later
frame (YouTube-VOS, MOSE) form a `Cohort` of their own: its own bank and policy, the same
image features.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from sam2rl_fast.memory.bank import MemoryBank
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import POLICIES, MemoryPolicy, make_policy
from sam2rl_fast.tracking.driver import TrackingSetup
from sam2rl_fast.tracking.prompts import (  # noqa: F401 (PromptError, mask_from_array: public here)
    Prompt,
    PromptError,
    mask_from_array,
    parse_prompt,
    split_prompt,
)
from sam2rl_fast.tracking.step import TrackingStep, check_precision, video_masks
from sam2rl_fast.tracking.video import open_video

_parse_prompt = parse_prompt  # its name before prompts.py

# Per-frame timings (ms). "frame" is the whole step after decoding, recorded instead of the
# stages when they are not timed one by one (profile=False: no CUDA sync between stages).
STAGES = ("decode", "preprocess", "image_encoder", "memory_attention", "sam_heads", "memory_encoder",
          "policy", "frame")


@dataclass
class TrackedFrame:
    index: int
    masks: np.ndarray  # [n_obj, H, W] bool at video resolution
    scores: np.ndarray  # [n_obj] object-score logits (> 0: object present)
    ious: np.ndarray  # [n_obj] predicted IoU of the output masks
    decisions: np.ndarray  # [n_obj] slot the frame's memory went to, -1 = not stored,
    #   -2 = the object is not tracked yet (its start frame comes later: empty mask, NaN)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    image: np.ndarray | None = None  # [H, W, 3] the frame itself (streaming only; run() drops it)


@dataclass
class TrackingResult:
    obj_ids: list
    masks: np.ndarray  # [T, n_obj, H, W] bool
    scores: np.ndarray  # [T, n_obj]
    ious: np.ndarray  # [T, n_obj]
    decisions: np.ndarray  # [T, n_obj] (-2 = the object not tracked on the frame: before its start)
    timings: dict[str, np.ndarray]  # stage -> [T] ms
    tracked: np.ndarray  # [T] bool: frames the tracker produced (from the first prompt frame on)

    @property
    def fps(self) -> float:
        total = sum(v[self.tracked].sum() for v in self.timings.values())
        return float(self.tracked.sum() / (total / 1000.0)) if total > 0 else float("nan")


@dataclass
class Cohort:
    """The objects that start on one frame, tracked as one batch: their own step (a
    `TrackingStep`, or its `PathwayStep` for SAM2Long; its bank) and policy instance (policies keep per-object state), the frame's image
    features shared with the other cohorts."""

    start: int
    lanes: list[int]  # the objects' indices in `FastTracker.obj_ids`
    prompts: list[Prompt]  # on `start`, one per lane
    corrections: dict[int, list[Prompt | None]]  # later frame -> a prompt (or None) per lane
    policy: MemoryPolicy
    capacity: int
    step: TrackingStep


def _cohort_policy(agent, first: MemoryPolicy) -> MemoryPolicy:
    """The policy of a cohort after the first: a fresh one for a policy name, else a shallow
    copy of the first (agent files are not loaded again; `reset` makes a copy's per-object
    state its own, which is where a `MemoryPolicy` must make it)."""
    if isinstance(agent, str) and agent.lower() in POLICIES:
        return make_policy(agent)
    return copy.copy(first)


class FastTracker:
    """Track objects through a video with SAM 2 and a memory policy.

    Args:
        video: a video file, a folder of JPEG/PNG frames, an array [T, H, W, 3] or an
            iterable of frames (a stream).
        agent: the memory policy: "sam2" (stock rule, exactly), "samurai", "dam4sam",
            "sam2long" (3 pathways per object: 3x the memory attention), a `MemoryPolicy`,
            or a trained agent file: `.zip` (`sam2rl-fast train`) or `.onnx`
            (`sam2rl-fast export`), refused if trained for another layout or model.
        model: a Meta checkpoint path, an official Hugging Face id of SAM 2 / 2.1
            ("facebook/sam2.1-hiera-tiny", ...: the checkpoint comes from the Hugging Face
            cache, downloaded into it when not there; HF_HUB_OFFLINE=1 and HF_HUB_CACHE
            apply; an existing local path of that name wins), a sam2 config name (random
            weights), a sam2 model, or None for the bundled demo model.
        prompt: {obj_id: p} on frame 0, or {frame_idx: {obj_id: p}}; p is a bool mask [H, W],
            a box (x0, y0, x1, y1) or (points [N, 2], labels [N]), in video pixels. An
            object starts on the earliest frame that names it (`{0: {1: m1}, 37: {2: m2}}`:
            object 2 appears on frame 37), with a memory of its own; before it, its mask is
            empty (score NaN, decision -2). Objects that start together are tracked as
            stock SAM 2 tracks them (stock cannot add one once tracking has started).
            Prompts on an object's later frames correct it (a new conditioning memory each,
            as stock's prompts on frames it has not tracked yet). Outputs list the objects
            in `obj_ids` order: by start frame, then in the order that frame's dict names them.
        device: where to run (default: CUDA if available).
        capacity: memory slots per object (stock SAM 2 reads 1 prompt + 6 recent = 7).
        fast_attention: use sam2rl-fast's fused memory attention (default None: on the CPU,
            where it is faster than stock; stock's on GPUs until the tensor-core kernel lands).
        fast_linears: on the CPU, run the model's fp32 Linear layers through oneDNN's
            prepacked kernels while tracking (see `sam2rl_fast.model.cpu_linear`).
        precision: "fp32" (default; exact against stock sam2 in fp32) or "bf16": every stage
            under `torch.autocast(dtype=torch.bfloat16)`, as SAM 2 runs on GPUs (on a CPU
            this pays where it has AVX512-BF16 or AMX; masks agree with stock fp32 at IoU
            0.99 on the benchmark clips, benchmarks/RESULTS.md). The bank stores bf16 either way.
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
                 profile: bool | None = None, num_frames: int | None = None, precision: str = "fp32"):
        self.precision = check_precision(precision)
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
        frames, starts = split_prompt(prompt)
        self.obj_ids = list(starts)
        parse = lambda f, o: parse_prompt(frames[f][o], self.H, self.W, o)  # noqa: E731
        groups = {}
        for k, o in enumerate(self.obj_ids):
            groups.setdefault(starts[o], []).append(k)
        specs = []
        for start, lanes in groups.items():
            objs = [self.obj_ids[k] for k in lanes]
            # Corrections: {frame: [Prompt | None per lane]}, each a new conditioning memory.
            corr = {f: [parse(f, o) if o in c else None for o in objs]
                    for f, c in frames.items() if f > start and any(o in c for o in objs)}
            specs.append((start, lanes, [parse(start, o) for o in objs], corr))
        n = self.video.num_frames
        late = [f for f in frames if n is not None and f >= n]
        if late:
            what = "prompt" if late[0] in groups else "correction prompt"
            raise PromptError(f"{what} on frame {late[0]}, the video has {n} frames "
                              f"(frames 0..{n - 1})")
        self.progress, self.fast_linears = progress, fast_linears
        self.profile = self.device.type == "cpu" if profile is None else bool(profile)
        self.setup = TrackingSetup(self.model, fast_attention=fast_attention, fast_linears=fast_linears,
                                   precision=precision)
        self.memory_attention, self.attention_impl = self.setup.memory_attention, self.setup.attention_impl
        self.cohorts: list[Cohort] = []
        for start, lanes, prompts, corr in specs:
            policy = _cohort_policy(agent, self.policy) if self.cohorts else self.policy
            # Each correction frame pins one more memory per object; the stock rule still
            # needs its 6 recent ones. (A learned agent's bank size is its layout's: there,
            # corrections take replaceable slots.)
            cap = capacity + (len(corr) if corr and not policy.fixed_capacity else 0)
            step = self.setup.step(cap, policy)  # SAM2Long: P lanes per object
            self.cohorts.append(Cohort(start, lanes, prompts, corr, policy, cap, step))
        # The first cohort's (all objects' when they start together): as before cohorts.
        first = self.cohorts[0]
        self.prompt_frame, self.capacity, self.step = first.start, first.capacity, first.step

    def bank_of(self, obj) -> tuple[MemoryBank, int]:
        """(the memory bank of object `obj`, its lane there), once tracking has started.
        `self.bank` is the first cohort's: every object's when they start together."""
        k = self.obj_ids.index(obj)
        c = next(c for c in self.cohorts if k in c.lanes)
        return c.step.bank, c.step.best_lane(c.lanes.index(k))

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
        for c in self.cohorts:
            c.step.reset(len(c.lanes), extra_cond=len(c.corrections))
            c.policy.reset(len(c.lanes), c.capacity, c.step.stock)
        self.bank = self.step.bank
        T = self.video.num_frames
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=T, desc=f"tracking ({self.policy.name})", unit="frame")
        t_prev = time.perf_counter()
        try:
            # The model's Linear layers run through oneDNN while tracking, restored afterwards
            # (in bf16: on packed bf16 copies of the weights); positional encodings are reused.
            with self.setup.running():
                f = -1
                for f, frame in enumerate(self.video):
                    decode_ms = (time.perf_counter() - t_prev) * 1e3
                    active = [c for c in self.cohorts if c.start <= f]
                    if not active:
                        if include_untracked:
                            yield self._output(f, [])
                        t_prev = time.perf_counter()
                        continue
                    t_frame = time.perf_counter()
                    timings = {"decode": decode_ms}
                    tm = timings if self.profile else None  # None: stages are not timed
                    with self.setup.autocast():  # not across the yield
                        feats = self.step.encode_image(frame, tm)  # once for every cohort
                        out = self._output(f, [(c, self._cohort_step(c, f, feats, T, tm)) for c in active])
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
            missed = sorted(g for c in self.cohorts for g in (c.start, *c.corrections) if g >= seen)
            if missed:
                raise PromptError(f"{self.video.name} ended after {seen} frame(s), before the "
                                  f"prompt on frame {missed[0]}")
        finally:
            if bar is not None:
                bar.close()

    def _cohort_step(self, c: Cohort, f, feats, T, tm):
        """(low-res logits, scores, IoUs, slots) of the cohort's objects on frame f."""
        feats = c.step.expand(feats, c.step.num_lanes)
        if f == c.start:
            return c.step.prompt(f, feats, c.prompts, (self.H, self.W), T, tm)[1:]
        if f in c.corrections:
            return self._correction_step(c, f, feats, T, tm, c.corrections[f])
        head, slots = c.step.track(f, feats, c.policy, T, tm)
        return head.low_res_masks, head.object_score_logits.reshape(-1), head.chosen_iou, np.asarray(slots)

    def _correction_step(self, c: Cohort, f, feats, T, tm, prompts):
        """A frame with corrections: prompted objects get their prompt's output and a new
        conditioning memory (as stock's add_new_mask / add_new_points_or_box on a frame it
        has not tracked yet); the others are tracked as usual."""
        fixed = frozenset(b for b, p in enumerate(prompts) if p is not None)
        head, slots = c.step.track(f, feats, c.policy, T, tm, fixed)
        lanes, low, score, iou, cslots = c.step.prompt(f, feats, prompts, (self.H, self.W), T, tm)
        idx = torch.tensor(lanes, device=low.device)
        out_low = head.low_res_masks.float().index_copy(0, idx, low.float())
        out_score = head.object_score_logits.reshape(-1).float().index_copy(0, idx, score.float())
        out_iou = head.chosen_iou.float().index_copy(0, idx, iou.float())
        slots = np.asarray(slots)
        slots[lanes] = cslots
        return out_low, out_score, out_iou, slots

    def _output(self, f, parts) -> TrackedFrame:
        """Frame f of every object from [(cohort, (low, score, iou, slots))] of the cohorts
        that have started; the others' objects get an empty mask, NaN and decision -2."""
        B = len(self.obj_ids)
        out = TrackedFrame(f, np.zeros((B, self.H, self.W), bool), np.full(B, np.nan, np.float32),
                           np.full(B, np.nan, np.float32), np.full(B, -2, np.int64))
        for c, (low, score, iou, slots) in parts:
            out.masks[c.lanes] = video_masks(low, (self.H, self.W))
            out.scores[c.lanes] = score.float().cpu().numpy()
            out.ious[c.lanes] = iou.float().cpu().numpy()
            out.decisions[c.lanes] = slots.astype(np.int64)
        return out
