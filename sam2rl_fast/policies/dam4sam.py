"""DAM4SAM / SAM2.1++ (Videnovic et al., 2025; jovanavidenovic/DAM4SAM), reimplemented
from its published rule.

The non-conditioning slots are split into a recent-appearance memory (RAM, 3 slots,
refreshed every 5th frame unless the mask is empty) and a distractor-resolving memory
(DRM, the remaining slots) that takes an anchor frame only when the mask is confident
(predicted IoU > 0.8), the object's area is stable (within 20% of the median of its
recent areas) and an alternative candidate mask signals a distractor (box IoU with the
chosen mask <= 0.7). Each part replaces its own oldest slot.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sam2rl_fast.policies.base import (
    MemoryObservation,
    MemoryPolicy,
    oldest_replaceable,
)


class Dam4SamPolicy(MemoryPolicy):
    name = "dam4sam"

    def __init__(self, ram_slots=3, update_every=5, anchor_iou=0.8, area_tolerance=0.2,
                 distractor_box_iou=0.7, area_history=10):
        self.ram_slots, self.update_every = ram_slots, update_every
        self.anchor_iou, self.area_tolerance = anchor_iou, area_tolerance
        self.distractor_box_iou, self.area_history = distractor_box_iou, area_history

    def reset(self, num_objects, capacity, stock):
        super().reset(num_objects, capacity, stock)
        if capacity - 1 < self.ram_slots:
            raise ValueError(f"dam4sam needs at least {self.ram_slots + 1} slots, the bank has {capacity}")
        self.kind = [dict() for _ in range(num_objects)]  # slot -> "ram" | "drm"
        self.areas = [deque(maxlen=self.area_history) for _ in range(num_objects)]
        self.start = None

    def _part(self, obs, b, kind, size):
        """A slot of this part: a free one while the part is below its size, else its oldest."""
        mine = np.zeros(obs.capacity, dtype=bool)
        for s, k in self.kind[b].items():
            mine[s] = k == kind and obs.slot_frame[b, s] >= 0
        if mine.sum() < size:
            free = (obs.slot_frame[b] < 0) & obs.replaceable()[b]
            pick = oldest_replaceable(obs, b, among=free)
            if pick >= 0:
                return pick
        return oldest_replaceable(obs, b, among=mine)

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        if self.start is None:
            self.start = obs.frame_idx - 1  # the prompt frame precedes the first decision
        act = np.full(obs.num_objects, -1, dtype=np.int64)
        drm_size = obs.capacity - int(obs.slot_is_cond[0].sum()) - self.ram_slots
        for b in range(obs.num_objects):
            if obs.obj_score[b] <= 0 or obs.area[b] <= 0:  # empty mask: never stored
                continue
            hist = self.areas[b]
            stable = bool(hist) and abs(obs.area[b] / np.median(hist) - 1) <= self.area_tolerance
            hist.append(float(obs.area[b]))
            if (drm_size > 0 and obs.iou[b] > self.anchor_iou and stable
                    and obs.alt_box_iou[b] <= self.distractor_box_iou):
                slot, kind = self._part(obs, b, "drm", drm_size), "drm"
            elif (obs.frame_idx - self.start) % self.update_every == 0:
                slot, kind = self._part(obs, b, "ram", self.ram_slots), "ram"
            else:
                continue
            if slot >= 0:
                act[b] = slot
                self.kind[b][slot] = kind
        return act
