"""SAM 2's training forward over clips, reading the memory sets a policy leaves.

As sam2's `training/model/sam2.py`: B clips (different videos in the batch dimension), all
frames through the image encoder at once; frame 0 is the conditioning frame, prompted with
the ground-truth mask (`_use_mask_as_output`, as the tracker does) or with the target's box
(points labelled 2 and 3, through the SAM heads); frames 1..T-1 are tracked on the
memories of earlier frames, which keep their gradients, with multimask output.

What differs from sam2's trainer is which memories a frame reads: not always the 6 most
recent frames but the set a `MemorySchedule` keeps (FIFO, random skips, random evictions,
the prompt alone). They are read through the package's own rules, as the tracker reads a
policy's bank: `RecencyReadRule` over `StockMemoryRule` selects from a `MemoryBank`'s slots
(the prompt memory at temporal index 6, the kept memories oldest first with temporal
indices by recency rank, newest 0; object pointers by the stock rule, every earlier frame
up to 16, written by `StockMemoryRule.assign_pointers`), and the gather is the ops'
pure-PyTorch definition (`sam2rl_fast.ops.reference.memory_gather_ref`), which autograd
runs through (the compiled gather has no backward).
"""

from __future__ import annotations

import dataclasses

import torch

from sam2rl_fast.memory.bank import MemoryBank
from sam2rl_fast.memory.selection import StockMemoryRule, fifo_slot
from sam2rl_fast.model.encodings import MemoryEncodings
from sam2rl_fast.ops.memory_bank import gather_out_dtype
from sam2rl_fast.ops.reference import memory_gather_ref
from sam2rl_fast.policies.base import RecencyReadRule
from sam2rl_fast.tracking.video import normalize

from .data import MemorySchedule


def to_model_input(frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 [..., S, S, 3] -> normalised float32 [..., 3, S, S] on `device` (as
    `sam2rl_fast.tracking.video.preprocess_frame`, without the resize: clips are made at image size)."""
    return normalize(frames.to(device, non_blocking=True).movedim(-1, -3))


class ClipBank(MemoryBank):
    """The memories of a batch of training clips, as a `MemoryBank` the read rules select from.

    Every clip follows the same schedule, so a memory goes to the same slot in each. The
    slots' metadata are the bank's (what `RecencyReadRule` and `StockMemoryRule` read); the
    features are this forward's own tensors, kept with their autograd graphs
    (``slot_mem[s]`` [B, HW, C], ``slot_ptr[r]`` [B, D]), in place of the bank's storage,
    which the compiled ops write without autograd.
    """

    def __init__(self, model, num_clips: int, num_tokens: int):
        super().__init__(num_clips, num_tokens, capacity=model.num_maskmem,
                         ptr_capacity=model.max_obj_ptrs_in_encoder, mem_dim=model.mem_dim,
                         ptr_dim=model.hidden_dim, dtype=torch.float32)
        self.feats = self.ptrs = None  # the features live in slot_mem / slot_ptr
        self.slot_mem: list[torch.Tensor | None] = [None] * self.capacity
        self.slot_ptr: list[torch.Tensor | None] = [None] * self.ptr_capacity

    def store(self, slot: int, mem: torch.Tensor, obj_score: torch.Tensor, *, frame_idx: int,
              is_cond: bool = False) -> None:
        """Every clip's memory mem [B, C, h, w] (sam2's `maskmem_features`) into `slot`."""
        s = self._slots(slot, self.capacity, "store")
        self._record(s, frame_idx, is_cond, obj_score.reshape(-1).float(), None)
        self.slot_mem[slot] = mem.flatten(2).transpose(1, 2)  # token-major, as the bank holds it

    def store_ptr(self, slot: int, obj_ptr: torch.Tensor, *, frame_idx: int,
                  is_cond: bool = False) -> None:
        """Every clip's object pointer obj_ptr [B, D] into pointer slot `slot` (-1: none)."""
        s = self._slots(slot, self.ptr_capacity, "store_ptr")
        self._record_ptr(s, frame_idx, is_cond)
        if slot >= 0:
            self.slot_ptr[slot] = obj_ptr

    def gather(self, selection, encodings) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`MemoryBank.gather` with gradients: ``(memory [M, B, C], memory_pos [M, B, C],
        num_obj_ptr_tokens)`` for memory attention, by `memory_gather_ref`."""
        slots, tslots, ptr_idx = selection.index_tensors(self)
        feats, ptrs = _stacked(self.slot_mem), _stacked(self.slot_ptr)  # [B, S, HW, C], [B, R, D]
        if ptr_idx.numel() == 0:  # no pointer read: none gets a (zero) gradient, which an
            ptrs = ptrs.detach()  # optimizer would treat unlike no gradient (weight decay)
        ptr_pos = encodings.pointer_pos_with_grad(selection.ptr_dists, selection.max_ptrs,
                                                  self.num_objects)
        dev = feats.device
        memory, memory_pos = memory_gather_ref(
            feats, encodings.spatial_pos, encodings.temporal_pos, slots.to(dev), tslots.to(dev),
            ptrs, ptr_idx.to(dev), ptr_pos, gather_out_dtype(feats, ptrs, ptr_idx.shape[-1]))
        return memory, memory_pos, ptr_idx.shape[-1] * (self.ptr_dim // self.mem_dim)


def _stacked(per_slot: list[torch.Tensor | None]) -> torch.Tensor:
    """[B, slots, ...]: the slots' tensors side by side, zeros in the empty ones."""
    zero = torch.zeros_like(next(x for x in per_slot if x is not None))
    return torch.stack([zero if x is None else x for x in per_slot], 1)


def _memory_slot(bank: ClipBank, t: int, schedule: MemorySchedule | None) -> int:
    """Where frame t's memory goes (-1: not kept): a free slot, else SAM 2's FIFO evicts the
    oldest memory, or the schedule's `evict[t]` names the kept memory (by age rank) it replaces."""
    if t > 0 and schedule is not None and not schedule.store[t]:
        return -1
    frames, is_cond = bank.frame_idx[0].numpy(), bank.is_cond[0].numpy()
    slot = fifo_slot(frames, is_cond)
    if t > 0 and schedule is not None and frames[slot] >= 0:  # full
        kept = [s for _, s in sorted(bank.slot_map(0, cond=False).items())]  # oldest first
        slot = kept[schedule.evict[t] % len(kept)]
    return slot


def memory_conditioned_features(model, bank: ClipBank, encodings, read_rule, feat, pos,
                                feat_size, t: int, num_frames: int, pointers: bool = True):
    """The current frame's features [B, C, H, W] after memory attention over what
    `read_rule` selects from `bank` at frame t. feat/pos [HW, B, C] (lowest level)."""
    B, C = feat.shape[1], model.hidden_dim
    H, W = feat_size
    sel = read_rule.select(bank, t, num_frames)
    if not pointers:
        sel = dataclasses.replace(sel, ptr_slots=[[] for _ in range(B)], ptr_dists=[[] for _ in range(B)])
    memory, memory_pos, n_ptr = bank.gather(sel, encodings)
    out = model.memory_attention(curr=[feat], curr_pos=[pos], memory=memory,
                                 memory_pos=memory_pos, num_obj_ptr_tokens=n_ptr)
    return out.permute(1, 2, 0).view(B, C, H, W)


def forward_clips(model, frames: torch.Tensor, masks: torch.Tensor,
                  boxes: torch.Tensor | None = None, schedule: MemorySchedule | None = None,
                  pointers: bool = True):
    """SAM 2's training forward on a batch of clips.

    Args:
        frames: normalised [B, T, 3, S, S] (S = model.image_size).
        masks: [B, T, S, S] ground truth (bool or float).
        boxes: None to prompt frame 0 with the ground-truth mask, or [B, 4] boxes in pixels
            to prompt it with points labelled 2 and 3.
        schedule: the memories kept (None: every frame, the stock FIFO).
        pointers: read object pointers (False: the spatial memories only; a training
            option that makes the model learn to read them, see demo_trainer/memory_path.py).

    Returns a list over frames of dicts with ``multimasks`` [B, M, S, S] logits, ``ious``
    [B, M], ``object_score_logits`` [B, 1] and ``supervised`` (False for a frame whose
    output is its mask prompt).
    """
    B, T = frames.shape[:2]
    S = model.image_size
    if frames.shape[-2:] != (S, S) or masks.shape[-2:] != (S, S):
        raise ValueError(f"clips must be {S}x{S} (the model's image size), got "
                         f"{tuple(frames.shape[-2:])}")
    # all frames through the image encoder at once, time-major: frame t is rows t*B..t*B+B-1
    img = frames.transpose(0, 1).reshape(T * B, *frames.shape[2:])
    _, vis_feats, vis_pos, feat_sizes = model._prepare_backbone_features(model.forward_image(img))
    stock = StockMemoryRule.from_sam2(model)
    read_rule = RecencyReadRule(stock)
    bank = ClipBank(model, B, vis_feats[-1].shape[0])
    outs, encodings = [], None
    for t in range(T):
        rows = slice(t * B, (t + 1) * B)
        feats = [x[:, rows] for x in vis_feats]
        pos = [x[:, rows] for x in vis_pos]
        if t == 0:
            current_out, sam_outputs = _prompt_frame(model, feats, pos, feat_sizes, masks, boxes, T)
        else:
            pix = memory_conditioned_features(model, bank, encodings, read_rule, feats[-1], pos[-1],
                                              feat_sizes[-1], t, T, pointers)
            current_out, sam_outputs = _tracked_frame(model, pix, feats, feat_sizes)
        _, multimasks, ious, low, high, obj_ptr, score = sam_outputs
        current_out.update(pred_masks=low, pred_masks_high_res=high, obj_ptr=obj_ptr)
        model._encode_memory_in_output(feats, feat_sizes, current_out["point_inputs"], True, high,
                                       score, current_out)
        if encodings is None:  # the memories' position encodings, with their gradients
            spatial_pos = current_out["maskmem_pos_enc"][-1][0].flatten(1).t()  # [HW, C]
            temporal_pos = model.maskmem_tpos_enc.reshape(model.num_maskmem, model.mem_dim)
            encodings = MemoryEncodings(spatial_pos, temporal_pos, None, model)
        slot = _memory_slot(bank, t, schedule)
        if slot >= 0:
            bank.store(slot, current_out["maskmem_features"], score, frame_idx=t, is_cond=t == 0)
        bank.store_ptr(stock.assign_pointers(bank, t, is_cond=t == 0)[0], obj_ptr, frame_idx=t,
                       is_cond=t == 0)
        outs.append({"multimasks": multimasks, "ious": ious, "object_score_logits": score,
                     "supervised": current_out["mask_inputs"] is None})
    return outs


def _prompt_frame(model, feats, pos, feat_sizes, masks, boxes, num_frames):
    """Frame 0 on its prompt: the ground-truth mask as the output, or the box through the
    SAM heads. Returns (sam2's current_out, its SAM outputs)."""
    B = masks.shape[0]
    point_inputs = mask_inputs = None
    if boxes is None:
        mask_inputs = masks[:, 0, None].float()
    else:
        point_inputs = {
            "point_coords": boxes.float().view(B, 2, 2),
            "point_labels": torch.tensor([[2, 3]], dtype=torch.int32,
                                         device=boxes.device).expand(B, 2),
        }
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    current_out, sam_outputs, _, _ = model._track_step(
        0, True, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, num_frames,
        False, None)
    return current_out, sam_outputs


def _tracked_frame(model, pix, feats, feat_sizes):
    """A tracked frame's SAM heads on its memory-conditioned features `pix`, multimask."""
    high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(feats[:-1], feat_sizes[:-1])]
    sam_outputs = model._forward_sam_heads(
        backbone_features=pix, point_inputs=None, mask_inputs=None,
        high_res_features=high_res, multimask_output=model._use_multimask(False, None))
    return {"point_inputs": None, "mask_inputs": None}, sam_outputs
