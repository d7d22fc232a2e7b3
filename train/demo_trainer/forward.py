"""SAM 2's training forward over clips, reading the memory sets a policy leaves.

As sam2's `training/model/sam2.py`: B clips (different videos in the batch dimension), all
frames through the image encoder at once; frame 0 is the conditioning frame, prompted with
the ground-truth mask (`_use_mask_as_output`, as the tracker does) or with the target's box
(points labelled 2 and 3, through the SAM heads); frames 1..T-1 are tracked on the
memories of earlier frames, which keep their gradients, with multimask output.

What differs from sam2's trainer is which memories a frame reads: not always the 6 most
recent frames but the set a `MemorySchedule` keeps (FIFO, random skips, random evictions,
the prompt alone), read as this project's tracker reads a policy's bank
(`sam2rl_fast.policies.base.RecencyReadRule`: the prompt memory at temporal index 6, the
kept memories oldest first with temporal indices by recency rank, newest 0). Object
pointers follow the stock rule (every earlier frame, up to 16), as they do in the tracker.
"""

from __future__ import annotations

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe

from sam2rl_fast.tracking.video import normalize

from .data import MemorySchedule


def to_model_input(frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 [..., S, S, 3] -> normalised float32 [..., 3, S, S] on `device` (as
    `sam2rl_fast.tracking.video.preprocess_frame`, without the resize: clips are made at image size)."""
    return normalize(frames.to(device, non_blocking=True).movedim(-1, -3))


def _object_pointers(model, ptrs: list[torch.Tensor], t: int, num_frames: int, B: int):
    """Pointer tokens and their encodings as `SAM2Base._prepare_memory_conditioned_features`
    builds them: the prompt frame's first, then frames t-1, t-2, ... (`ptrs[k]` is frame k's)."""
    C, D = model.hidden_dim, model.mem_dim
    max_ptrs = min(num_frames, model.max_obj_ptrs_in_encoder)
    # the prompt frame's pointer (signed distance t), then frames t-1, t-2, ... down to 1
    keep = [(t, 0)] + [(d, t - d) for d in range(1, max_ptrs) if t - d >= 1]
    obj_ptrs = torch.stack([ptrs[f] for _, f in keep], 0)  # [P, B, C]
    if model.add_tpos_enc_to_obj_ptrs:
        t_diff_max = max_ptrs - 1
        tpos_dim = C if model.proj_tpos_enc_in_obj_ptrs else D
        obj_pos = torch.tensor([p for p, _ in keep], device=obj_ptrs.device)
        obj_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(obj_pos / t_diff_max, dim=tpos_dim))
        obj_pos = obj_pos.unsqueeze(1).expand(-1, B, D)
    else:
        obj_pos = obj_ptrs.new_zeros(len(keep), B, D)
    if D < C:  # each 256-d pointer becomes 4 tokens of 64
        obj_ptrs = obj_ptrs.reshape(-1, B, C // D, D).permute(0, 2, 1, 3).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(C // D, dim=0)
    return obj_ptrs, obj_pos


def memory_conditioned_features(model, feat, pos, feat_size, memories, ptrs, t, num_frames):
    """The current frame's features after memory attention over `memories`.

    feat/pos [HW, B, C] (lowest level), memories: [(maskmem_features [B, 64, h, w],
    maskmem_pos [B, 64, h, w], temporal index)], the prompt's first."""
    B, C = feat.shape[1], model.hidden_dim
    H, W = feat_size
    mem, mem_pos = [], []
    for feats, mpos, tidx in memories:
        mem.append(feats.flatten(2).permute(2, 0, 1))
        mem_pos.append(mpos.flatten(2).permute(2, 0, 1) + model.maskmem_tpos_enc[tidx])
    n_ptr = 0
    if model.use_obj_ptrs_in_encoder and ptrs:
        obj_ptrs, obj_pos = _object_pointers(model, ptrs, t, num_frames, B)
        mem.append(obj_ptrs)
        mem_pos.append(obj_pos)
        n_ptr = obj_ptrs.shape[0]
    out = model.memory_attention(curr=[feat], curr_pos=[pos], memory=torch.cat(mem, 0),
                                 memory_pos=torch.cat(mem_pos, 0), num_obj_ptr_tokens=n_ptr)
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
    n_recent = model.num_maskmem - 1
    top = model.num_maskmem - 1  # the conditioning memory's temporal index
    # all frames through the image encoder at once, time-major: frame t is rows t*B..t*B+B-1
    img = frames.transpose(0, 1).reshape(T * B, *frames.shape[2:])
    backbone_out = model.forward_image(img)
    _, vis_feats, vis_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs, ptrs, kept, cond_mem = [], [], [], None
    for t in range(T):
        rows = slice(t * B, (t + 1) * B)
        feats = [x[:, rows] for x in vis_feats]
        pos = [x[:, rows] for x in vis_pos]
        point_inputs = mask_inputs = None
        if t == 0:
            if boxes is None:
                mask_inputs = masks[:, 0, None].float()
            else:
                point_inputs = {
                    "point_coords": boxes.float().view(B, 2, 2),
                    "point_labels": torch.tensor([[2, 3]], dtype=torch.int32,
                                                 device=boxes.device).expand(B, 2),
                }
            current_out, sam_outputs, _, _ = model._track_step(
                t, True, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, T,
                False, None)
        else:
            high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                        for x, s in zip(feats[:-1], feat_sizes[:-1])]
            n = len(kept)
            memories = [cond_mem] + [(m[0], m[1], min(n - 1 - i, top - 1))
                                     for i, m in enumerate(kept)]
            pix = memory_conditioned_features(model, feats[-1], pos[-1], feat_sizes[-1],
                                              memories, ptrs if pointers else [], t, T)
            current_out = {"point_inputs": None, "mask_inputs": None}
            sam_outputs = model._forward_sam_heads(
                backbone_features=pix, point_inputs=None, mask_inputs=None,
                high_res_features=high_res, multimask_output=model._use_multimask(False, None))
        multimasks_low, multimasks, ious, low, high, obj_ptr, score = sam_outputs
        current_out["pred_masks"] = low
        current_out["pred_masks_high_res"] = high
        current_out["obj_ptr"] = obj_ptr
        model._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high, score,
                                       current_out)
        ptrs.append(obj_ptr)
        mem = (current_out["maskmem_features"], current_out["maskmem_pos_enc"][-1])
        if t == 0:
            output_dict["cond_frame_outputs"][0] = current_out
            cond_mem = (*mem, top)
        elif schedule is None or schedule.store[t]:
            if len(kept) >= n_recent:
                kept.pop(0 if schedule is None else schedule.evict[t] % len(kept))
            kept.append(mem)
        outs.append({"multimasks": multimasks, "ious": ious, "object_score_logits": score,
                     "supervised": mask_inputs is None})
    return outs
