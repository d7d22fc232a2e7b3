"""`FastTracker`: SAM 2 video object tracking on the fast path, memory decided by a policy.

Per frame, for all objects at once (upstream tracks them one at a time):
image encoder (once) -> bank gather -> memory attention -> SAM heads -> memory encoder
-> policy -> bank append. Memory is the bank's fixed capacity whatever the video length,
frames are decoded one at a time and dropped after use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sam2rl_fast.cpu_linear import packed_linears
from sam2rl_fast.memory_bank import MemoryBank
from sam2rl_fast.memory_attention import FastMemoryAttention
from sam2rl_fast.memory_encodings import MemoryEncodings
from sam2rl_fast.model_loading import build_model
from sam2rl_fast.observation import ObservationBuilder
from sam2rl_fast.policies import make_policy
from sam2rl_fast.sam_heads import forward_sam_heads
from sam2rl_fast.selection import MemorySelection, StockMemoryRule
from sam2rl_fast.video import open_video, preprocess_frame

STAGES = ("decode", "preprocess", "image_encoder", "memory_attention", "sam_heads", "memory_encoder", "policy")


class PromptError(ValueError):
    """A prompt that does not fit the video or names no object."""


@dataclass
class Prompt:
    kind: str  # "mask" | "box" | "points"
    mask: np.ndarray | None = None  # [H, W] bool
    points: np.ndarray | None = None  # [N, 2] (x, y) pixels
    labels: np.ndarray | None = None  # [N] int: 1 positive, 0 negative, 2/3 box corners


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


def _parse_prompt(p, H: int, W: int, obj) -> Prompt:
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().numpy()
    if isinstance(p, np.ndarray) and p.ndim == 2:
        if p.shape != (H, W):
            raise PromptError(f"object {obj!r}: mask is {p.shape[1]}x{p.shape[0]}, the video {W}x{H}")
        m = p.astype(bool)
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


def _split_prompt(prompt) -> tuple[int, dict]:
    if not isinstance(prompt, dict) or not prompt:
        raise PromptError("prompt must be a non-empty dict {obj_id: mask | box | (points, labels)} "
                          "or {frame_idx: {obj_id: ...}}")
    if all(isinstance(v, dict) for v in prompt.values()):
        frames = {int(f): v for f, v in prompt.items() if v}
        if len(frames) != 1:
            raise PromptError(f"prompts on frames {sorted(frames)}: this version tracks objects "
                              "prompted on one frame; prompt every object on the same frame")
        (f, objs), = frames.items()
        if f < 0:
            raise PromptError(f"prompt frame {f} is negative")
        return f, objs
    return 0, prompt


class FastTracker:
    """Track objects through a video with SAM 2 and a memory policy.

    Args:
        video: a video file, a folder of JPEG/PNG frames, an array [T, H, W, 3] or an
            iterable of frames (a stream).
        agent: the memory policy: "sam2" (stock rule, exactly), "samurai", "dam4sam", or a
            `MemoryPolicy`.
        model: a Meta checkpoint path, a sam2 config name (random weights), a sam2 model,
            or None for the bundled demo model.
        prompt: {obj_id: p} on frame 0, or {frame_idx: {obj_id: p}}; p is a bool mask [H, W],
            a box (x0, y0, x1, y1) or (points [N, 2], labels [N]), in video pixels.
        device: where to run (default: CUDA if available).
        capacity: memory slots per object (stock SAM 2 reads 1 prompt + 6 recent = 7).
        fast_attention: use sam2rl-fast's fused memory attention (default None: on the CPU,
            where it is faster than stock; stock's on GPUs until the tensor-core kernel lands).
        fast_linears: on the CPU, run the model's fp32 Linear layers through oneDNN's
            prepacked kernels while tracking (see `sam2rl_fast.cpu_linear`).
        progress: show a progress bar with FPS.
    """

    def __init__(self, video, agent="sam2", model=None, prompt=None, device=None, *,
                 config: str | None = None, image_size: int | None = None, capacity: int = 7,
                 fast_attention: bool | None = None, fast_linears: bool = True, progress: bool = False):
        self.video = open_video(video)
        self.model = build_model(model, config=config, device=device, image_size=image_size)
        self.device = self.model.device
        self.policy = make_policy(agent)
        self.H, self.W = self.video.height, self.video.width
        self.prompt_frame, objs = _split_prompt(prompt)
        self.obj_ids = list(objs)
        self.prompts = [_parse_prompt(objs[o], self.H, self.W, o) for o in self.obj_ids]
        if self.video.num_frames is not None and self.prompt_frame >= self.video.num_frames:
            raise PromptError(f"prompt on frame {self.prompt_frame}, the video has "
                              f"{self.video.num_frames} frames")
        self.capacity, self.progress, self.fast_linears = capacity, progress, fast_linears
        self.memory_attention, self.attention_impl = self._pick_attention(fast_attention)

    def _pick_attention(self, fast: bool | None):
        # Until the tensor-core CUDA kernel lands, stock's flash SDPA is the faster memory
        # attention on GPUs (H100 bf16 at 1024 px: 6.5 ms vs 17 ms); sam2rl-fast's own is on the CPU.
        if fast is None:
            fast = self.device.type == "cpu"
        if fast:
            return FastMemoryAttention.from_sam2(self.model.memory_attention), "sam2rl_fast"
        return self.model.memory_attention, "stock"

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
        m, B = self.model, len(self.obj_ids)
        enc = MemoryEncodings.from_sam2(m)
        stock = StockMemoryRule.from_sam2(m)
        self.bank = bank = MemoryBank(B, enc.num_tokens, capacity=self.capacity,
                                      ptr_capacity=stock.max_obj_ptrs, device=self.device)
        self.policy.reset(B, self.capacity, stock)
        self.obs = ObservationBuilder(B, self.capacity, m.mem_dim)
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
                for f, frame in enumerate(self.video):
                    decode_ms = (time.perf_counter() - t_prev) * 1e3
                    if f < self.prompt_frame:
                        if include_untracked:
                            yield TrackedFrame(f, np.zeros((B, self.H, self.W), bool), np.full(B, np.nan),
                                               np.full(B, np.nan), np.full(B, -2))
                        t_prev = time.perf_counter()
                        continue
                    tm = {"decode": decode_ms}
                    feats = self._encode_image(frame, B, tm)
                    if f == self.prompt_frame:
                        out = self._prompt_step(f, feats, bank, enc, stock, T, tm)
                    else:
                        out = self._track_step(f, feats, bank, enc, T, tm)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    out.timings, out.image = tm, frame
                    if bar is not None:
                        bar.update(1)
                        total = sum(tm.values())
                        bar.set_postfix(fps=f"{1000.0 / total:.1f}" if total else "-")
                    t_prev = time.perf_counter()
                    yield out
        finally:
            if bar is not None:
                bar.close()

    @contextlib.contextmanager
    def _timed(self, tm, stage):
        """Add the wall time of the block to tm[stage] (ms), synchronising CUDA at its end."""
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        tm[stage] = tm.get(stage, 0.0) + (time.perf_counter() - t) * 1e3

    def _encode_image(self, frame, B, tm):
        m = self.model
        with self._timed(tm, "preprocess"):  # resize + normalise, as sam2's frame loader
            img = preprocess_frame(frame, m.image_size, self.device)[None]
        with self._timed(tm, "image_encoder"):
            out = m.forward_image(img)
            _, vf, vp, sizes = m._prepare_backbone_features(out)
            # The features are shared by every object: expand, never copy (as stock does).
            vf = [x.expand(-1, B, -1) for x in vf]
            vp = [x.expand(-1, B, -1) for x in vp]
        return vf, vp, sizes

    @staticmethod
    def _high_res(vf, sizes):
        return [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(vf[:-1], sizes[:-1])]

    def _prompt_step(self, f, feats, bank, enc, stock, T, tm) -> TrackedFrame:
        """The prompted frame: SAM on the prompt (no memory), then its conditioning memory."""
        m = self.model
        vf, vp, sizes = feats
        B = len(self.obj_ids)
        lows, ptrs, scores, ious = [], [], [], []
        with self._timed(tm, "sam_heads"):
            for b, p in enumerate(self.prompts):  # prompts differ per object: one at a time
                vf_b = [x[:, b:b + 1] for x in vf]
                high_res = self._high_res(vf_b, sizes)
                if p.kind == "mask" and m.use_mask_input_as_output_without_sam:
                    mask = torch.from_numpy(p.mask)[None, None].float().to(self.device)
                    if mask.shape[-2:] != (m.image_size, m.image_size):
                        mask = F.interpolate(mask, size=(m.image_size, m.image_size), mode="bilinear",
                                             align_corners=False, antialias=True)
                        mask = (mask >= 0.5).float()
                    pix = vf_b[-1].permute(1, 2, 0).view(1, m.hidden_dim, *sizes[-1])
                    low, _, iou, _, _, ptr, score = m._use_mask_as_output(pix, high_res, mask)
                else:
                    pix = m._prepare_memory_conditioned_features(
                        frame_idx=f, is_init_cond_frame=True, current_vision_feats=vf_b[-1:],
                        current_vision_pos_embeds=[x[:, b:b + 1] for x in vp[-1:]],
                        feat_sizes=sizes[-1:], output_dict={}, num_frames=T)
                    pts = self._point_inputs(p)
                    head = forward_sam_heads(m, pix, pts, None, high_res,
                                             m._use_multimask(True, pts))
                    low, iou, ptr, score = (head.low_res_masks, head.chosen_iou[:, None],
                                            head.obj_ptr, head.object_score_logits)
                lows.append(low)
                ptrs.append(ptr)
                scores.append(score.reshape(1))
                ious.append(iou.reshape(1).float())
        low = torch.cat(lows)
        score = torch.cat(scores)
        with self._timed(tm, "memory_encoder"):
            # As stock's propagate preflight: encode the low-res output upsampled, binarised.
            high = F.interpolate(low, size=(m.image_size, m.image_size), mode="bilinear",
                                 align_corners=False)
            mems = [m._encode_new_memory([x[:, b:b + 1] for x in vf], sizes, high[b:b + 1],
                                         score[b:b + 1, None], is_mask_from_pts=True)[0]
                    for b in range(B)]
            mem = torch.cat(mems)
        with self._timed(tm, "policy"):
            slots, ptr_slots = stock.assign(bank, f, is_cond=True)
            bank.append(mem, slots, frame_idx=f, is_cond=True, obj_score=score,
                        iou=torch.cat(ious))
            bank.append_ptr(torch.cat(ptrs), ptr_slots, frame_idx=f, is_cond=True)
            self.obs.prompted(f, slots, low, mem)
        return self._output(f, low, score, torch.cat(ious), np.asarray(slots))

    def _point_inputs(self, p: Prompt) -> dict:
        scale = torch.tensor([self.model.image_size / self.W, self.model.image_size / self.H])
        coords = torch.from_numpy(p.points)[None] * scale
        return {"point_coords": coords.to(self.device),
                "point_labels": torch.from_numpy(p.labels)[None].to(self.device)}

    def _track_step(self, f, feats, bank, enc, T, tm) -> TrackedFrame:
        m, policy = self.model, self.policy
        vf, vp, sizes = feats
        B = len(self.obj_ids)
        H, W = sizes[-1]
        with self._timed(tm, "memory_attention"):
            sel = policy.read_rule.select(bank, f, T)
            pix = self._attend(sel, bank, enc, vf, vp).permute(1, 2, 0).view(B, m.hidden_dim, H, W)
        with self._timed(tm, "sam_heads"):
            head = forward_sam_heads(m, pix, None, None, self._high_res(vf, sizes),
                                     m._use_multimask(False, None), choose=policy.choose_mask)
        with self._timed(tm, "memory_encoder"):
            mem, _ = m._encode_new_memory(vf, sizes, head.high_res_masks, head.object_score_logits,
                                          is_mask_from_pts=False)
        with self._timed(tm, "policy"):
            obs = (self.obs.build(f, bank, head, mem, policy.motion_scores())
                   if policy.needs_observation else None)
            slots = policy.assign(bank, f, obs)
            # mem already holds SAM 2.1's no-object embedding (added by _encode_new_memory).
            bank.append(mem, slots, frame_idx=f, obj_score=head.object_score_logits.reshape(-1),
                        iou=head.chosen_iou)
            if obs is not None:
                self.obs.stored(slots)
            # Pointers follow the stock rule whatever the policy: the last 15 frames.
            bank.append_ptr(head.obj_ptr, policy.stock.assign_pointers(bank, f), frame_idx=f)
        return self._output(f, head.low_res_masks, head.object_score_logits.reshape(-1),
                            head.chosen_iou, np.asarray(slots))

    def _attend(self, sel: MemorySelection, bank, enc, vf, vp) -> torch.Tensor:
        """Memory attention for all objects; objects whose selections differ in size run in groups."""
        groups: dict[tuple[int, int], list[int]] = {}
        for b in range(bank.num_objects):
            groups.setdefault((len(sel.slots[b]), len(sel.ptr_slots[b])), []).append(b)
        if len(groups) == 1:
            memory, memory_pos, n_ptr = bank.gather(sel, enc)
            return self.memory_attention(curr=vf[-1:], curr_pos=vp[-1:], memory=memory,
                                         memory_pos=memory_pos, num_obj_ptr_tokens=n_ptr)
        out = torch.empty_like(vf[-1])
        for objs in groups.values():
            sub = bank.subset(objs)
            sub_sel = MemorySelection([sel.slots[b] for b in objs], [sel.tslots[b] for b in objs],
                                      [sel.ptr_slots[b] for b in objs], [sel.ptr_dists[b] for b in objs],
                                      sel.max_ptrs)
            memory, memory_pos, n_ptr = sub.gather(sub_sel, enc)
            idx = torch.tensor(objs, device=vf[-1].device)
            out[:, idx] = self.memory_attention(
                curr=[vf[-1][:, idx]], curr_pos=[vp[-1][:, idx]], memory=memory,
                memory_pos=memory_pos, num_obj_ptr_tokens=n_ptr)
        return out

    def _output(self, f, low, score, iou, slots) -> TrackedFrame:
        video = F.interpolate(low.float(), size=(self.H, self.W), mode="bilinear", align_corners=False)
        return TrackedFrame(f, (video[:, 0] > 0).cpu().numpy(), score.float().cpu().numpy(),
                            iou.float().cpu().numpy(), slots.astype(np.int64))
