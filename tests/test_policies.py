"""Memory policies' rules on constructed observation sequences (no model needed)."""

import numpy as np
import pytest
import torch

from sam2rl_fast.memory.selection import StockMemoryRule
from sam2rl_fast.policies import (
    OBS_LAYOUT,
    Dam4SamPolicy,
    MemoryObservation,
    RecencyReadRule,
    SamuraiPolicy,
    VectorPolicy,
    obs_size,
)
from sam2rl_fast.policies.kalman import BoxKalman
from sam2rl_fast.policies.mask_stats import box_iou_matrix, mask_boxes, mask_centroids

S = 7


class FakeBank:
    """Slot bookkeeping of a MemoryBank for one object (what the policies read)."""

    def __init__(self, capacity=S):
        self.capacity = capacity
        self.frames = np.full(capacity, -1)
        self.cond = np.zeros(capacity, bool)
        self.frames[0], self.cond[0] = 0, True  # the prompt

    def obs(self, f, iou=0.9, score=5.0, area=0.1, alt=1.0, motion=None):
        return MemoryObservation(
            frame_idx=f, slots=np.zeros((1, self.capacity, 8), np.float32),
            candidate=np.zeros((1, 8), np.float32), slot_frame=self.frames[None].copy(),
            slot_is_cond=self.cond[None].copy(), iou=np.array([iou]), obj_score=np.array([score]),
            area=np.array([area]), alt_box_iou=np.array([alt]),
            motion_score=None if motion is None else np.array([motion]))

    def store(self, slot, f):
        if slot >= 0:
            self.frames[slot] = f


def run(policy, seq, capacity=S):
    """Feed (iou, score, area, alt[, motion]) per frame from frame 1; return decisions."""
    bank = FakeBank(capacity)
    policy.reset(1, capacity, StockMemoryRule())
    out = []
    for f, kw in enumerate(seq, start=1):
        a = int(policy.assign(_B(capacity), f, bank.obs(f, **kw))[0])
        bank.store(a, f)
        out.append(a)
    return out, bank


class _B:  # what MemoryPolicy.assign checks: object count and capacity
    def __init__(self, capacity):
        self.num_objects, self.capacity = 1, capacity


def test_samurai_stores_only_confident_present_frames_fifo():
    seq = [dict(iou=0.9)] * 6 + [dict(iou=0.4), dict(score=-1.0), dict(motion=-0.1)] + [dict()] * 2
    acts, bank = run(SamuraiPolicy(), seq)
    assert acts[:6] == [1, 2, 3, 4, 5, 6]  # free slots first
    assert acts[6:9] == [-1, -1, -1]  # low IoU, object absent, motion disagrees
    assert acts[9:] == [1, 2]  # then the oldest non-prompt memory is replaced
    assert bank.frames[0] == 0 and bank.cond[0]  # the prompt stays


def test_samurai_motion_overrides_predicted_iou_once_stable():
    pol = SamuraiPolicy()
    pol.reset(1, S, StockMemoryRule())
    h, w = 64, 64

    def masks(x_true, x_far):
        m = torch.zeros(1, 3, h, w)
        m[0, 0, 20:30, x_true:x_true + 10] = 1  # where the object moves to
        m[0, 1, 20:30, x_far:x_far + 10] = 1  # a distractor elsewhere
        return m * 2 - 1

    for t in range(20):  # a steady motion of 1 px per frame: the filter becomes stable
        c = pol.choose_mask(masks(10 + t, 50), torch.tensor([[0.9, 0.5, 0.1]]), torch.ones(1, 1))
        assert int(c[0]) == 0
    # The distractor now has a slightly higher predicted IoU, but motion says candidate 0.
    c = pol.choose_mask(masks(30, 50), torch.tensor([[0.80, 0.85, 0.1]]), torch.ones(1, 1))
    assert int(c[0]) == 0 and pol.motion_scores()[0] > 0.5
    # Before the filter is stable (fresh policy) the predicted IoU decides alone.
    fresh = SamuraiPolicy()
    fresh.reset(1, S, StockMemoryRule())
    assert int(fresh.choose_mask(masks(30, 50), torch.tensor([[0.80, 0.85, 0.1]]), torch.ones(1, 1))[0]) == 1


def test_dam4sam_recent_memory_every_fifth_frame_and_never_empty():
    seq = [dict(alt=1.0)] * 20
    seq[9] = dict(score=-2.0)  # frame 10: empty mask, not stored although it is a refresh frame
    acts, _ = run(Dam4SamPolicy(), seq)
    stored = [f for f, a in enumerate(acts, start=1) if a >= 0]
    assert stored == [5, 15, 20]
    assert len({a for a in acts if a >= 0}) == 3  # RAM uses its own 3 slots


def test_dam4sam_anchor_needs_confidence_stable_area_and_a_distractor():
    base = dict(iou=0.9, area=0.1, alt=1.0)
    seq = [base] * 3 + [dict(base, alt=0.3)]  # frame 4: a distractor appears, all else fine
    seq += [dict(base, alt=0.3, iou=0.7)]  # frame 5... a refresh frame, but not an anchor
    seq += [dict(base, alt=0.3, area=0.2)]  # frame 6: area jumped 100%: no anchor
    acts, _ = run(Dam4SamPolicy(), seq)
    assert acts[3] >= 0  # anchor
    assert acts[4] >= 0 and acts[4] != acts[3]  # the RAM refresh goes to another part
    assert acts[5] == -1
    anchors = [dict(base, alt=0.3)] * 6
    acts, bank = run(Dam4SamPolicy(), [base] * 2 + anchors)
    drm = [a for a in acts[2:] if a >= 0]
    assert len(set(drm)) == 3  # the DRM holds 3 anchors and then replaces its oldest
    assert drm[3] == drm[0]


def test_vector_policy_maps_actions_and_protects_the_prompt():
    seen = {}

    def predict(x):
        seen["shape"] = x.shape
        return np.array([0, 1, 4])  # skip, slot 0 (the prompt), slot 3

    pol = VectorPolicy(predict, capacity=S)
    pol.reset(3, S, StockMemoryRule())
    bank = FakeBank()
    o = bank.obs(3)
    o3 = MemoryObservation(3, np.repeat(o.slots, 3, 0), np.repeat(o.candidate, 3, 0),
                           np.repeat(o.slot_frame, 3, 0), np.repeat(o.slot_is_cond, 3, 0),
                           *(np.repeat(v, 3) for v in (o.iou, o.obj_score, o.area, o.alt_box_iou)))
    assert pol.decide(o3).tolist() == [-1, -1, 3]
    assert seen["shape"] == (3, obs_size(S)) == (3, 64)
    bad = VectorPolicy(lambda x: np.array([9, 0, 0]), capacity=S)
    bad.reset(3, S, StockMemoryRule())
    with pytest.raises(ValueError, match="outside"):
        bad.decide(o3)


def test_recency_read_rule_orders_and_positions():
    from sam2rl_fast import MemoryBank

    bank = MemoryBank(1, 4, capacity=S)
    for slot, f, cond in [(0, 0, True), (3, 9, False), (1, 2, False), (2, 5, False)]:
        bank.frame_idx[0, slot], bank.is_cond[0, slot] = f, cond
    bank.ptr_frame[0, 0], bank.ptr_is_cond[0, 0] = 0, True
    sel = RecencyReadRule(StockMemoryRule()).select(bank, 10)
    assert sel.slots == [[0, 1, 2, 3]]  # prompt, then frames 2, 5, 9 (oldest first)
    assert sel.tslots == [[6, 2, 1, 0]]  # newest memory gets temporal index 0
    assert sel.ptr_slots == [[0]] and sel.ptr_dists == [[10]]


def test_mask_statistics_and_kalman():
    m = torch.zeros(2, 8, 10, dtype=torch.bool)
    m[0, 2:4, 3:7] = True
    assert mask_boxes(m).tolist() == [[3, 2, 7, 4], [0, 0, 0, 0]]
    c = mask_centroids(m)
    assert torch.allclose(c[0], torch.tensor([5.0 / 10, 3.0 / 8])) and torch.isnan(c[1]).all()
    a, b = torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])
    assert float(box_iou_matrix(a, b)) == pytest.approx(1 / 7)
    kf = BoxKalman()
    kf.initiate([0, 0, 10, 10])
    for t in range(1, 30):
        kf.predict()
        kf.update([2 * t, 0, 2 * t + 10, 10])
    pred = kf.predict()  # constant velocity: the next box is 2 px further
    assert np.allclose(pred, [60, 0, 70, 10], atol=0.5)


def test_layout_is_versioned():
    assert OBS_LAYOUT.endswith("/v1") and obs_size(S) == S * 8 + 8
