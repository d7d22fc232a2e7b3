"""The per-frame tracking step for a batch of lanes, each with its own memory.

A lane is one object of a video (`FastTracker`) or one episode of the RL environment
(`sam2rl_fast.rl`): lanes share the model, and every stage runs batched over them:
bank gather -> memory attention -> SAM heads -> memory encoder -> (policy) -> bank append.
The step is split where a memory policy needs to look: `segment` and `encode` produce
the frame's output and its candidate memory, `observe` describes it, `store` writes the
policy's decision; `track` runs them under a policy, as every driver does. Image features
come from outside (computed per frame, or cached).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam2rl_fast.memory.bank import MemoryBank
from sam2rl_fast.memory.selection import MemorySelection, StockMemoryRule, fifo_slot
from sam2rl_fast.model.encodings import MemoryEncodings
from sam2rl_fast.model.memory_attention import FastMemoryAttention
from sam2rl_fast.model.sam_heads import HeadOutput, forward_sam_heads
from sam2rl_fast.policies.observation import ObservationBuilder
from sam2rl_fast.tracking.prompts import Prompt
from sam2rl_fast.tracking.video import preprocess_frame


# Image features of a frame, as sam2's _prepare_backbone_features returns them:
# (vision feats [HW_l, B, C_l] per level, position encodings per level, sizes per level).
Features = tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def precision_autocast(precision: str, device_type: str):
    """The context a step runs in for `precision`: bf16 autocast, or none (fp32). Enter it
    around the model's work only: autocast is thread state, a caller's code between calls
    (a tracker's yields, a policy's decision) must not run under it."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")


def video_masks(low: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """Low-res logits [B, 1, h, w] -> bool masks [B, H, W] at video resolution (bilinear, > 0,
    as stock's outputs): what the tracker returns and the RL environment rewards."""
    up = F.interpolate(low.float(), size=hw, mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).cpu().numpy()


def pick_memory_attention(model, fast: bool | None):
    """(module, name): sam2rl-fast's fused attention or the model's own.

    Default (None): ours on the CPU, where it is faster; stock's on GPUs until the
    tensor-core kernel lands (H100 bf16 at 1024 px: stock's flash SDPA 6.5 ms, ours 17 ms).
    """
    if fast is None:
        fast = model.device.type == "cpu"
    if fast:
        return FastMemoryAttention.from_sam2(model.memory_attention), "sam2rl_fast"
    return model.memory_attention, "stock"


@dataclass
class FrameStep:
    """One frame of every lane: the heads' output, the candidate memories [B, C, h, w] (before
    SAM 2.1's no-object embedding, which `store` adds as it writes them) and, when asked
    for, the observation a policy decides on."""

    head: HeadOutput
    mem: torch.Tensor
    obs: object | None = None  # MemoryObservation


class TrackingStep:
    """SAM 2's per-frame computation over B lanes with a `MemoryBank` of `capacity` slots each."""

    def __init__(self, model, memory_attention, capacity: int = 7):
        self.model, self.memory_attention, self.capacity = model, memory_attention, capacity
        self.device = model.device
        self.enc = MemoryEncodings.from_sam2(model)
        self.stock = StockMemoryRule.from_sam2(model)

    def reset(self, num_lanes: int, extra_cond: int = 0) -> None:
        """Empty memories for `num_lanes` lanes (`extra_cond`: prompted frames after the
        first, each pinning one more pointer beside the stock rule's 16)."""
        self.num_lanes = num_lanes
        self.bank = self.make_bank(num_lanes, self.stock.max_obj_ptrs + extra_cond)
        self.obs = ObservationBuilder(num_lanes, self.capacity, self.model.mem_dim)

    def make_bank(self, num_lanes: int, ptr_capacity: int, cls=MemoryBank, **options) -> MemoryBank:
        """The bank `reset` builds (a subclass may pick another `MemoryBank` class)."""
        return cls(num_lanes, self.enc.num_tokens, capacity=self.capacity, ptr_capacity=ptr_capacity,
                   device=self.device, **options)

    def best_lane(self, obj: int) -> int:
        """The lane whose output is object `obj`'s (here each object is one lane)."""
        return obj

    # ------------------------------------------------------------------ timing
    @contextlib.contextmanager
    def timed(self, tm: dict | None, stage: str):
        """Add the wall time of the block to tm[stage] (ms), synchronising CUDA at its end."""
        if tm is None:
            yield
            return
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        tm[stage] = tm.get(stage, 0.0) + (time.perf_counter() - t) * 1e3

    # ------------------------------------------------------------------ image features
    def encode_image(self, frame: np.ndarray, tm: dict | None = None) -> Features:
        """Backbone features of one frame [H, W, 3] uint8 (batch 1)."""
        m = self.model
        with self.timed(tm, "preprocess"):  # resize + normalise, as sam2's frame loader
            img = preprocess_frame(frame, m.image_size, self.device)[None]
        with self.timed(tm, "image_encoder"):
            _, vf, vp, sizes = m._prepare_backbone_features(m.forward_image(img))
        return vf, vp, sizes

    @staticmethod
    def expand(feats: Features, num_lanes: int) -> Features:
        """One frame's features for every lane: expanded, never copied (as stock does)."""
        vf, vp, sizes = feats
        return [x.expand(-1, num_lanes, -1) for x in vf], [x.expand(-1, num_lanes, -1) for x in vp], sizes

    @staticmethod
    def _lanes(feats: Features, b: int) -> Features:
        vf, vp, sizes = feats
        return [x[:, b:b + 1] for x in vf], [x[:, b:b + 1] for x in vp], sizes

    @staticmethod
    def _high_res(vf, sizes):
        return [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(vf[:-1], sizes[:-1])]

    # ------------------------------------------------------------------ prompted frames
    def prompt(self, f: int, feats: Features, prompts: list[Prompt | None], video_hw: tuple[int, int],
               num_frames: int | None = None, tm: dict | None = None):
        """SAM on each lane's prompt (None: the lane has none), stored as a conditioning memory.

        A prompt sees no memory, on the first prompted frame and on a later one alike: stock
        treats a prompt on a frame it has not tracked yet as an initial conditioning frame
        (`is_init_cond_frame`), and a streaming tracker prompts frames before tracking them.
        Mask prompts are the output as they are (SAM 2's mask-as-output path).
        Returns (lanes, low-res logits [n,1,h,w], object scores [n], predicted IoUs [n],
        slots [n]) for the n prompted lanes."""
        m = self.model
        vf, _, sizes = feats
        lanes = [b for b, p in enumerate(prompts) if p is not None]
        lows, ptrs, scores, ious = [], [], [], []
        with self.timed(tm, "sam_heads"):
            for b in lanes:  # prompts differ per lane: one at a time
                p = prompts[b]
                vf_b, vp_b, _ = self._lanes(feats, b)
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
                        current_vision_pos_embeds=vp_b[-1:], feat_sizes=sizes[-1:], output_dict={},
                        num_frames=num_frames)
                    pts = self._point_inputs(p, video_hw)
                    head = forward_sam_heads(m, pix, pts, None, high_res, m._use_multimask(True, pts))
                    low, iou, ptr, score = (head.low_res_masks, head.chosen_iou[:, None],
                                            head.obj_ptr, head.object_score_logits)
                lows.append(low)
                ptrs.append(ptr)
                scores.append(score.reshape(1))
                ious.append(iou.reshape(1).float())
        low, score, iou = torch.cat(lows), torch.cat(scores), torch.cat(ious)
        with self.timed(tm, "memory_encoder"):
            # As stock's propagate preflight: encode the low-res output upsampled, binarised.
            high = F.interpolate(low, size=(m.image_size, m.image_size), mode="bilinear",
                                 align_corners=False)
            mem = torch.cat([self._encode_memory([x[:, b:b + 1] for x in vf], sizes, high[i:i + 1],
                                                 score[i:i + 1, None], is_mask_from_pts=True)
                             for i, b in enumerate(lanes)])
        with self.timed(tm, "policy"):
            for b in lanes:  # a full bank (a learned agent's fixed size) gives up its oldest memory
                frames, is_cond = self.bank.frame_idx[b].numpy(), self.bank.is_cond[b].numpy()
                if (frames >= 0).all():
                    slot = fifo_slot(frames, is_cond)
                    if slot < 0:
                        raise RuntimeError(f"lane {b}: every memory slot holds a prompt; "
                                           "build the bank with a larger capacity")
                    self.bank.evict(b, slot)
            all_slots, all_ptr_slots = self.stock.assign(self.bank, f, is_cond=True)
            B = self.num_lanes
            slots = [all_slots[b] if prompts[b] is not None else -1 for b in range(B)]
            ptr_slots = [all_ptr_slots[b] if prompts[b] is not None else -1 for b in range(B)]
            idx = torch.tensor(lanes, device=mem.device)
            full = lambda x: x.new_zeros((B, *x.shape[1:])).index_copy_(0, idx, x)
            self.bank.append(full(mem), slots, frame_idx=f, is_cond=True, obj_score=full(score),
                             iou=full(iou), no_obj_embed=self.enc.no_obj_embed)
            self.bank.append_ptr(full(torch.cat(ptrs)), ptr_slots, frame_idx=f, is_cond=True)
            self.obs.prompted(f, slots, full(low), full(self.observed_memory(mem, score)))
        return lanes, low, score, iou, np.asarray([slots[b] for b in lanes])

    def _point_inputs(self, p: Prompt, video_hw: tuple[int, int]) -> dict:
        H, W = video_hw
        scale = torch.tensor([self.model.image_size / W, self.model.image_size / H])
        coords = torch.from_numpy(p.points)[None] * scale
        return {"point_coords": coords.to(self.device),
                "point_labels": torch.from_numpy(p.labels)[None].to(self.device)}

    # ------------------------------------------------------------------ tracked frames
    def advance(self, f: int, feats: Features, read_rule, num_frames: int | None = None, *,
                choose=None, observe: bool = True, motion=None, tm: dict | None = None) -> FrameStep:
        """The one per-frame path of every caller (tracker, corrections, RL episodes, the
        stock replay): memory attention -> SAM heads -> memory encoder, then (`observe`) what
        a policy sees. `choose` picks a lane's output mask; `motion()` (after the heads, e.g.
        SAMURAI's Kalman scores) joins the observation. What is stored is the caller's
        decision: `store(f, step, slots)`."""
        head = self.segment(f, feats, read_rule, num_frames, choose, tm)
        mem = self.encode(feats, head, tm)
        obs = None
        if observe:
            with self.timed(tm, "policy"):
                obs = self.observe(f, head, mem, motion() if motion is not None else None)
        return FrameStep(head, mem, obs)

    def track(self, f: int, feats: Features, policy, num_frames: int | None = None,
              tm: dict | None = None, fixed=frozenset()) -> tuple[HeadOutput, list[int]]:
        """One tracked frame of every lane under `policy` (reset for these lanes): `advance`,
        the policy's slots (-1 for the lanes in `fixed`, whose frame is a correction that
        `prompt` stores instead) and `store`. Returns (the heads' output, slots) per output
        lane: what the tracker and the stock replay of the RL episodes run."""
        fs = self.advance(f, feats, policy.read_rule, num_frames, choose=policy.choose_mask,
                          observe=policy.needs_observation, motion=policy.motion_scores, tm=tm)
        with self.timed(tm, "policy"):
            slots = [-1 if b in fixed else s for b, s in enumerate(policy.assign(self.bank, f, fs.obs))]
            self.store(f, fs.head, fs.mem, slots, observed=fs.obs is not None, skip_pointers=fixed)
        return fs.head, slots

    def segment(self, f: int, feats: Features, read_rule, num_frames: int | None = None,
                choose=None, tm: dict | None = None) -> HeadOutput:
        """Frame f of every lane from its memories (`read_rule` picks them)."""
        return self.heads(self.attend(f, feats, read_rule, num_frames, tm), feats, choose, tm)

    def attend(self, f: int, feats: Features, read_rule, num_frames: int | None = None,
               tm: dict | None = None) -> torch.Tensor:
        """Memory-conditioned features [B, C, H, W] of frame f (memory attention)."""
        vf, vp, sizes = feats
        H, W = sizes[-1]
        with self.timed(tm, "memory_attention"):
            sel = read_rule.select(self.bank, f, num_frames)
            return self._attend(sel, vf, vp).permute(1, 2, 0).view(self.num_lanes, self.model.hidden_dim, H, W)

    def heads(self, pix: torch.Tensor, feats: Features, choose=None, tm: dict | None = None) -> HeadOutput:
        """SAM heads without prompts (tracking), all lanes at once."""
        vf, _, sizes = feats
        with self.timed(tm, "sam_heads"):
            return forward_sam_heads(self.model, pix, None, None, self._high_res(vf, sizes),
                                     self.model._use_multimask(False, None), choose=choose)

    def encode(self, feats: Features, head: HeadOutput, tm: dict | None = None) -> torch.Tensor:
        """The candidate memories [B, C, h, w] of the frame just segmented, before SAM 2.1's
        no-object embedding (`store` adds it, fused into the bank write)."""
        vf, _, sizes = feats
        with self.timed(tm, "memory_encoder"):
            return self._encode_memory(vf, sizes, head.high_res_masks, head.object_score_logits,
                                       is_mask_from_pts=False)

    def _encode_memory(self, vf, sizes, masks, score, is_mask_from_pts: bool) -> torch.Tensor:
        """sam2's memory encoder without the no-object embedding. `_encode_new_memory` adds
        `(1 - (score > 0)) * no_obj_embed_spatial`; told every object is present it adds
        0 * e = +-0, which changes no value that `memory_append` then turns into sam2's:
        (x + 0 e) + w e == x + w e bit for bit, for w = 0 and w = 1 (signed zeros included)."""
        if self.model.no_obj_embed_spatial is not None:
            score = torch.ones_like(score)
        return self.model._encode_new_memory(vf, sizes, masks, score, is_mask_from_pts)[0]

    def observed_memory(self, mem: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The candidates [B, C, h, w] as sam2's memory encoder returns them (SAM 2.1: plus
        no_obj_embed_spatial where the object score is <= 0), what policies observe: added,
        as sam2 adds it, to the lanes that need it only."""
        e = self.model.no_obj_embed_spatial
        absent = ~(score.reshape(-1) > 0)
        if e is None or not bool(absent.any()):
            return mem
        out = mem.clone()
        out[absent] += e.reshape(1, -1, 1, 1)
        return out

    def observe(self, f: int, head: HeadOutput, mem: torch.Tensor, motion=None):
        """The `MemoryObservation` of the candidates (layout `OBS_LAYOUT`)."""
        return self.obs.build(f, self.bank, head, self.observed_memory(mem, head.object_score_logits),
                              motion)

    def store(self, f: int, head: HeadOutput, mem: torch.Tensor, slots, observed: bool,
              skip_pointers=()) -> None:
        """Write the candidates to `slots` (-1 = not stored); pointers follow the stock rule
        whatever the policy (the last 15 frames: they cost 4 tokens each), except for the
        lanes in `skip_pointers` (whose frame is a correction: `prompt` stores its pointer)."""
        self.bank.append(mem, slots, frame_idx=f, obj_score=head.object_score_logits.reshape(-1),
                         iou=head.chosen_iou, no_obj_embed=self.enc.no_obj_embed)
        if observed:
            self.obs.stored(slots)
        ptr_slots = self.stock.assign_pointers(self.bank, f)
        ptr_slots = [-1 if b in skip_pointers else s for b, s in enumerate(ptr_slots)]
        self.bank.append_ptr(head.obj_ptr, ptr_slots, frame_idx=f)

    def _attend(self, sel: MemorySelection, vf, vp) -> torch.Tensor:
        """Memory attention for all lanes. One gather packs every lane's memories, lanes with
        equal counts next to each other; each group of equal counts attends on a view of
        its block ([M, n, C], no copy)."""
        bank, enc = self.bank, self.enc
        B, C, split = bank.num_objects, bank.mem_dim, bank.ptr_dim // bank.mem_dim
        groups: dict[tuple[int, int], list[int]] = {}
        for b in range(B):
            groups.setdefault((len(sel.slots[b]), len(sel.ptr_slots[b])), []).append(b)
        order = [b for objs in groups.values() for b in objs]
        memory, memory_pos, cu = bank.gather_varlen(sel, enc, None if order == list(range(B)) else order)
        blocks, start = [], 0
        for (_, n_ptr), objs in groups.items():
            r0, r1 = cu[start], cu[start + len(objs)]
            start += len(objs)
            mem = memory[r0:r1].view(len(objs), -1, C).transpose(0, 1)  # [M, n, C], a view
            pos = memory_pos[r0:r1].view(len(objs), -1, C).transpose(0, 1)
            if n_ptr == 0:  # memory_gather's dtype for this group alone (exact: bank values)
                mem = mem.to(bank.dtype)
            blocks.append((objs, mem, pos, n_ptr * split))
        if len(blocks) == 1:  # every lane reads as many memories: one call, as stock batches
            _, mem, pos, n_tok = blocks[0]
            return self.memory_attention(curr=vf[-1:], curr_pos=vp[-1:], memory=mem,
                                         memory_pos=pos, num_obj_ptr_tokens=n_tok)
        out = torch.empty_like(vf[-1])
        for objs, mem, pos, n_tok in blocks:
            idx = torch.tensor(objs, device=vf[-1].device)
            out[:, idx] = self.memory_attention(
                curr=[vf[-1][:, idx]], curr_pos=[vp[-1][:, idx]], memory=mem, memory_pos=pos,
                num_obj_ptr_tokens=n_tok)
        return out
