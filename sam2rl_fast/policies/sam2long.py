"""SAM2Long (Ding et al., 2024, arXiv 2410.16268), reimplemented from the paper (its code,
CC BY-NC, is not used).

A constrained tree search over SAM 2's memory. Each object keeps P pathways, each with its
own memory bank and a cumulative score. Per frame every pathway proposes the decoder's K
(= 3) candidate masks; of the P x K branches the P with the highest cumulative score
S + log(predicted IoU + eps) become the new pathways, each inheriting its parent's memory.
When even the best pathway's object-score logit is below `uncertainty_threshold`, the P
branches are picked with distinct masks (mask IoU < `distinct_iou`) so that the pathways
do not collapse onto one hypothesis. Memory is object-aware: a pathway stores a frame only
if its predicted IoU > `iou_threshold` and its object score > `obj_score_threshold`, and
reads the prompt plus the most recent `num_maskmem - 1` frames that passed. Memory
attention is modulated by object scores: each memory frame's features are scaled by its
object score mapped linearly (over the frames read) onto `modulation` = (low, high). The
output is the pathway with the highest cumulative score.

This module holds the rule: the branch selection, the write rule and the weights. The
lanes, the bank copies and the per-frame path are `sam2rl_fast.tracking.pathways`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.memory.selection import fifo_slot
from sam2rl_fast.policies.base import MemoryObservation, MemoryPolicy


@dataclass
class Branches:
    """The P new pathways of each of n objects: parent pathway and candidate mask (both
    [n, P] long, the parent indexed within its object) and cumulative scores [n, P]."""

    parents: torch.Tensor
    cands: torch.Tensor
    scores: torch.Tensor

    def lanes(self) -> torch.Tensor:
        """[n * P] the parent lane of each new lane (lane = object * P + pathway)."""
        n, P = self.parents.shape
        return (self.parents + torch.arange(n)[:, None] * P).reshape(-1)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks [..., h, w] (two empty masks: 1, the same mask)."""
    inter = (a & b).flatten(-2).sum(-1).double()
    union = (a | b).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def select_branches(scores: torch.Tensor, ious: torch.Tensor, obj_scores: torch.Tensor,
                    masks: torch.Tensor | None = None, *, eps: float = 1e-6,
                    uncertainty_threshold: float = 2.0, distinct_iou: float = 0.9) -> Branches:
    """The top-P of the P x K branches of each object.

    scores [n, P] cumulative (float64; -inf: a pathway not yet born), ious [n, P, K]
    predicted IoUs, obj_scores [n, P] object-score logits, masks [n, P, K, h, w] bool (the
    candidates, for the uncertainty rule; None: no rule). Branches are ranked by
    scores + log(max(iou, 0) + eps), ties by the lower (pathway, candidate) index, so P = 1
    picks stock's argmax. An object whose best object score is below
    `uncertainty_threshold` takes, in rank order, branches whose masks have IoU <
    `distinct_iou` with every branch taken so far, then fills up with the best of the rest.
    """
    n, P, K = ious.shape
    cand = scores.double()[:, :, None] + torch.log(ious.double().clamp_min(0) + eps)
    flat = cand.reshape(n, P * K)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    pick = order[:, :P].clone()
    if masks is not None and P > 1:
        for o in torch.nonzero(obj_scores.float().amax(1) < uncertainty_threshold).reshape(-1).tolist():
            m = masks[o].reshape(P * K, *masks.shape[-2:])
            taken: list[int] = []
            for i in order[o].tolist():
                if len(taken) == P:
                    break
                if all(float(mask_iou(m[i], m[j])) < distinct_iou for j in taken):
                    taken.append(i)
            taken += [i for i in order[o].tolist() if i not in taken][:P - len(taken)]
            pick[o] = torch.tensor(taken)
    return Branches(pick // K, pick % K, flat.gather(1, pick))


def memory_weights(obj_scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Weights of the memory frames read: their object scores mapped linearly from
    [min, max] onto [low, high] (all equal, or one frame: the midpoint)."""
    s = obj_scores.double()
    if not s.numel() or not bool(s.amax() > s.amin()):
        return torch.full_like(s, (low + high) / 2)
    lo, hi = s.amin(), s.amax()
    return low + (high - low) * (s - lo) / (hi - lo)


def _number(name, v, lo=-math.inf, hi=math.inf, lo_open=False, inf_ok=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ValueError(f"sam2long: {name} must be a number, got {v!r}")
    if (not inf_ok and math.isinf(v)) or v < lo or v > hi or (lo_open and v == lo):
        bound = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"sam2long: {name} must be in {bound}, got {v!r}")
    return float(v)


class Sam2LongPolicy(MemoryPolicy):
    """SAM2Long's memory tree. `pathways` (P) lanes per object; `FastTracker` runs them
    through `PathwayStep`. With P = 1, thresholds of -inf and modulation (1, 1) it is the
    stock rule exactly (every frame stored, the 6 most recent read, the argmax mask)."""

    name = "sam2long"
    needs_observation = False  # it reads predicted IoUs and object scores only

    def __init__(self, pathways: int = 3, iou_threshold: float = 0.3,
                 obj_score_threshold: float = 0.0, uncertainty_threshold: float = 2.0,
                 distinct_iou: float = 0.9, modulation=(0.95, 1.05), eps: float = 1e-6):
        if isinstance(pathways, bool) or not isinstance(pathways, (int, np.integer)) or pathways < 1:
            raise ValueError(f"sam2long: pathways must be an int >= 1, got {pathways!r}")
        self.pathways = int(pathways)
        self.iou_threshold = _number("iou_threshold", iou_threshold)
        self.obj_score_threshold = _number("obj_score_threshold", obj_score_threshold)
        self.uncertainty_threshold = _number("uncertainty_threshold", uncertainty_threshold)
        self.distinct_iou = _number("distinct_iou", distinct_iou, 0.0, 1.0, lo_open=True)
        self.eps = _number("eps", eps, 0.0, lo_open=True, inf_ok=False)
        try:
            low, high = modulation
        except (TypeError, ValueError):
            raise ValueError(f"sam2long: modulation must be a pair (low, high), got {modulation!r}") from None
        low = _number("modulation low", low, 0.0, lo_open=True, inf_ok=False)
        high = _number("modulation high", high, 0.0, lo_open=True, inf_ok=False)
        if low > high:
            raise ValueError(f"sam2long: modulation low {low} > high {high}")
        self.modulation = (low, high)

    @property
    def modulated(self) -> bool:
        return self.modulation[0] != self.modulation[1]

    def reset(self, num_objects, capacity, stock):
        super().reset(num_objects, capacity, stock)  # reads: RecencyReadRule (what is stored)
        if capacity < 2:
            raise ValueError(f"sam2long needs at least 2 memory slots, the bank has {capacity}")
        # Only pathway 0 exists at the prompt (the others would duplicate its branches).
        self.scores = torch.full((num_objects, self.pathways), -math.inf, dtype=torch.float64)
        self.scores[:, 0] = 0.0

    def select(self, multimasks: torch.Tensor, ious: torch.Tensor, obj_scores: torch.Tensor) -> Branches:
        """The branches of one frame from the heads' output of every lane (multimasks
        [n*P, K, h, w], ious [n*P, K], obj_scores [n*P, 1]); updates the scores."""
        n, P = self.scores.shape
        K = ious.shape[-1]
        obj = obj_scores.detach().float().cpu().reshape(n, P)
        uncertain = P > 1 and bool((obj.amax(1) < self.uncertainty_threshold).any())
        masks = (multimasks > 0).reshape(n, P, K, *multimasks.shape[-2:]).cpu() if uncertain else None
        br = select_branches(self.scores, ious.detach().float().cpu().reshape(n, P, K), obj, masks,
                             eps=self.eps, uncertainty_threshold=self.uncertainty_threshold,
                             distinct_iou=self.distinct_iou)
        self.scores = br.scores
        return br

    def best_lanes(self) -> list[int]:
        """[n] each object's lane with the highest cumulative score (ties: the lower)."""
        P = self.pathways
        return [o * P + int(p) for o, p in enumerate(torch.argmax(self.scores, dim=1))]

    def passes(self, iou: float, obj_score: float) -> bool:
        return iou > self.iou_threshold and obj_score > self.obj_score_threshold

    def memory_slots(self, bank, iou, obj_score) -> list[int]:
        """Slots (-1: not stored) of the lanes' new memories: a frame that passes takes a
        free slot while the lane holds fewer than num_maskmem - 1 other memories, else
        replaces its oldest one (so the bank holds the most recent frames that passed)."""
        iou = torch.as_tensor(iou).detach().float().cpu().reshape(-1)
        obj_score = torch.as_tensor(obj_score).detach().float().cpu().reshape(-1)
        frames, is_cond = bank.frame_idx.numpy(), bank.is_cond.numpy()
        return [self._slot(frames[b], is_cond[b], float(iou[b]), float(obj_score[b]))
                for b in range(bank.num_objects)]

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        """The write rule on an observation (one pathway per lane, e.g. the RL environment)."""
        return np.array([self._slot(obs.slot_frame[b], obs.slot_is_cond[b], float(obs.iou[b]),
                                    float(obs.obj_score[b])) for b in range(obs.num_objects)],
                        dtype=np.int64)

    def _slot(self, frames, is_cond, iou: float, obj_score: float) -> int:
        """The write rule on one lane's slots (frame per slot, -1 empty; conditioning flags)."""
        keep = self.stock.num_maskmem - 1
        if keep < 1 or not self.passes(iou, obj_score):
            return -1
        others = (frames >= 0) & ~is_cond
        return fifo_slot(frames, is_cond, among=others if others.sum() >= keep else None)
