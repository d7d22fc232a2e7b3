"""The bank inside `TrackingStep`: SAM 2.1's no-object embedding fused into the append, and
ragged selections attended through one packed gather, both bit for bit what they replace."""

import pytest
import torch

from sam2rl_fast.ops import memory_gather
from sam2rl_fast.tracking.prompts import Prompt
from sam2rl_fast.tracking.step import TrackingStep
from tests.helpers import build_random_predictor, moving_square_video

T = 4


def tracked_step(config, n_lanes, frames_stored=1, fast=False):
    """A step with every lane prompted on frame 0 and `frames_stored` frames tracked after it."""
    predictor = build_random_predictor(config, 256)
    frames, masks = moving_square_video(T, n_obj=n_lanes, seed=n_lanes)
    attn = predictor.memory_attention
    if fast:
        from sam2rl_fast.model.memory_attention import FastMemoryAttention

        attn = FastMemoryAttention.from_sam2(attn)
    step = TrackingStep(predictor, attn)
    step.reset(n_lanes)
    hw = frames.shape[1:3]
    feats = step.expand(step.encode_image(frames[0]), n_lanes)
    step.prompted = feats, step.prompt(0, feats, [Prompt("mask", mask=masks[0, k])
                                                  for k in range(n_lanes)], hw, T)
    for f in range(1, 1 + frames_stored):
        feats = step.expand(step.encode_image(frames[f]), n_lanes)
        fs = step.advance(f, feats, step.stock, T, observe=False)
        step.store(f, fs.head, fs.mem, step.stock.assign_memories(step.bank, f), observed=False)
    f = 1 + frames_stored
    return predictor, step, step.expand(step.encode_image(frames[f]), n_lanes), f


@pytest.mark.parametrize("config", ["sam2.1", "sam2"])
@torch.inference_mode()
def test_store_adds_no_obj_embed_as_sam2s_encoder_does(config):
    predictor, step, feats, f = tracked_step(config, 2)
    head = step.segment(f, feats, step.stock, T)
    head.object_score_logits = torch.tensor([[2.5], [-1.5]])  # present, absent: both branches
    mem = step.encode(feats, head)
    # What stock stores: the encoder's output with the embedding, cast to bf16.
    ref = predictor._encode_new_memory(feats[0], feats[2], head.high_res_masks,
                                       head.object_score_logits, is_mask_from_pts=False)[0]
    if config == "sam2.1":  # the encoder no longer adds it: the bank does
        assert torch.equal(mem[0], ref[0]) and not torch.equal(mem[1], ref[1])
    else:  # SAM 2.0 has no embedding
        assert predictor.no_obj_embed_spatial is None and torch.equal(mem, ref)
    # Policies observe what they observed before: sam2's memory, embedding included.
    assert torch.equal(step.observed_memory(mem, head.object_score_logits), ref)
    slots = step.stock.assign_memories(step.bank, f)
    step.store(f, head, mem, slots, observed=False)
    for b in range(2):
        stored = step.bank.feats[b, slots[b]]
        assert torch.equal(stored, ref[b].flatten(1).t().to(torch.bfloat16)), f"lane {b}"


@torch.inference_mode()
def test_prompted_memories_match_sam2s_encoder():
    predictor, step, _, _ = tracked_step("sam2.1", 2, frames_stored=0)
    (vf, _, sizes), (lanes, low, score, _, slots) = step.prompted
    S = predictor.image_size
    high = torch.nn.functional.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)
    for i, b in enumerate(lanes):
        ref = predictor._encode_new_memory([x[:, b:b + 1] for x in vf], sizes, high[i:i + 1],
                                           score[i:i + 1, None], is_mask_from_pts=True)[0][0]
        stored = step.bank.feats[b, slots[i]]
        assert torch.equal(stored, ref.flatten(1).t().to(torch.bfloat16)), f"lane {b}"


@pytest.mark.parametrize("fast", [False, True])
@torch.inference_mode()
def test_ragged_lanes_attend_as_separate_groups_did(fast):
    """Lanes 0 and 2 read fewer memories than lane 1, so two groups, lanes 0 and 2 not
    adjacent. One packed gather must give each group what a per-group copy of the bank and
    memory_gather gave (the path it replaces), bit for bit."""
    _, step, feats, f = tracked_step("sam2.1", 3, frames_stored=2, fast=fast)
    sel = step.stock.select(step.bank, f, T)
    for b in (0, 2):
        sel.slots[b], sel.tslots[b] = sel.slots[b][:2], sel.tslots[b][:2]
    assert len(sel.slots[1]) > 2
    vf, vp, _ = feats
    out = step._attend(sel, vf, vp)
    bank, enc = step.bank, step.enc
    for objs in ([0, 2], [1]):
        idx = torch.tensor(objs)
        pos = enc.pointer_pos([sel.ptr_dists[b] for b in objs], sel.max_ptrs, len(objs))
        memory, memory_pos, n_ptr = memory_gather(
            bank.feats[idx], enc.spatial_pos, enc.temporal_pos,
            torch.tensor([sel.slots[b] for b in objs]), torch.tensor([sel.tslots[b] for b in objs]),
            bank.ptrs[idx], torch.tensor([sel.ptr_slots[b] for b in objs]), pos)
        ref = step.memory_attention(curr=[vf[-1][:, idx]], curr_pos=[vp[-1][:, idx]], memory=memory,
                                    memory_pos=memory_pos, num_obj_ptr_tokens=n_ptr)
        assert torch.equal(out[:, idx], ref), f"lanes {objs}"
