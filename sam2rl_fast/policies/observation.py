"""Builds the `MemoryObservation` a policy sees each frame (layout `OBS_LAYOUT`).

Keeps, per object and slot, the statistics of the memory stored there (mask area and
centroid, a pooled unit-norm memory descriptor), so that the candidate can be compared
with every stored memory without touching the bank's features again.
"""

from __future__ import annotations

import numpy as np
import torch

from sam2rl_fast.policies.base import AGE_SCALE, MemoryObservation
from sam2rl_fast.policies.mask_stats import box_iou_matrix, mask_boxes, mask_centroids

_SQRT2 = float(np.sqrt(2.0))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


class ObservationBuilder:
    def __init__(self, num_objects: int, capacity: int, mem_dim: int = 64):
        B, S = num_objects, capacity
        self.area = np.zeros((B, S), np.float32)
        self.centroid = np.full((B, S, 2), np.nan, np.float32)
        self.desc = np.zeros((B, S, mem_dim), np.float32)
        self.last_frame = np.full(B, -1, np.int64)
        self.last_area = np.zeros(B, np.float32)
        self.last_desc = np.zeros((B, mem_dim), np.float32)
        self.prev_centroid = np.full((B, 2), np.nan, np.float32)
        self._pending = None

    @torch.no_grad()
    def candidate_stats(self, low_res_masks: torch.Tensor, mem: torch.Tensor):
        """area [B], centroid [B, 2], descriptor [B, C] of candidate masks [B,1,h,w] / memories [B,C,h,w]."""
        m = low_res_masks[:, 0] > 0
        area = m.float().mean((-2, -1)).cpu().numpy()
        cen = mask_centroids(m).cpu().numpy()
        d = mem.float().mean((-2, -1))
        d = torch.nn.functional.normalize(d, dim=-1).cpu().numpy()
        return area, cen, d

    @torch.no_grad()
    def build(self, frame_idx: int, bank, head, mem: torch.Tensor,
              motion_score: np.ndarray | None = None) -> MemoryObservation:
        """The observation of frame `frame_idx`'s candidate (`head`: a `HeadOutput`, `mem` [B,C,h,w])."""
        area, cen, d = self.candidate_stats(head.low_res_masks, mem)
        self._pending = (frame_idx, area, cen, d)
        B, S = self.area.shape
        iou = head.chosen_iou.float().cpu().numpy()
        score = head.object_score_logits.reshape(-1).float().cpu().numpy()
        alt = self._alt_box_iou(head)

        frames = bank.frame_idx.numpy()
        occ = frames >= 0
        slots = np.zeros((B, S, 8), np.float32)
        slots[..., 0] = occ
        slots[..., 1] = bank.is_cond.numpy()
        slots[..., 2] = np.where(occ, np.clip(np.abs(frame_idx - frames) / AGE_SCALE, 0, 1), 0)
        slots[..., 3] = np.where(occ, np.nan_to_num(bank.iou.numpy(), nan=1.0), 0)
        slots[..., 4] = np.where(occ, _sigmoid(np.nan_to_num(bank.obj_score.numpy())), 0)
        slots[..., 5] = np.where(occ, self.area, 0)
        disp = np.linalg.norm(self.centroid - cen[:, None], axis=-1) / _SQRT2
        slots[..., 6] = np.where(occ, np.nan_to_num(disp, nan=1.0), 0)
        slots[..., 7] = np.where(occ, np.einsum("bsc,bc->bs", self.desc, d), 0)

        cand = np.zeros((B, 8), np.float32)
        cand[:, 0] = iou
        cand[:, 1] = _sigmoid(score)
        cand[:, 2] = area
        ratio = np.where(self.last_area > 0, area / np.maximum(self.last_area, 1e-12), 4.0)
        cand[:, 3] = np.clip(ratio, 0, 4) / 4
        motion = np.linalg.norm(cen - self.prev_centroid, axis=-1) / _SQRT2
        cand[:, 4] = np.nan_to_num(motion, nan=0.0)
        cand[:, 5] = alt
        gap = np.where(self.last_frame >= 0, np.abs(frame_idx - self.last_frame) / AGE_SCALE, 1.0)
        cand[:, 6] = np.clip(gap, 0, 1)
        cand[:, 7] = np.einsum("bc,bc->b", self.last_desc, d)
        self.prev_centroid = cen
        return MemoryObservation(
            frame_idx=frame_idx, slots=slots, candidate=cand, slot_frame=frames.copy(),
            slot_is_cond=bank.is_cond.numpy().copy(), iou=iou, obj_score=score, area=area,
            alt_box_iou=alt, motion_score=motion_score)

    @staticmethod
    def _alt_box_iou(head) -> np.ndarray:
        """Box IoU between the chosen mask and the most confident other candidate (1 = none)."""
        B, K = head.ious.shape
        if K < 2:
            return np.ones(B, np.float32)
        boxes = mask_boxes(head.multimasks > 0)  # [B, K, 4]
        rows = torch.arange(B, device=boxes.device)
        ious = head.ious.float().clone()
        ious[rows, head.choice] = -float("inf")
        alt = ious.argmax(-1)
        nonempty = (head.multimasks[rows, alt] > 0).flatten(1).any(-1)
        v = box_iou_matrix(boxes[rows, head.choice], boxes[rows, alt])
        return torch.where(nonempty, v, torch.ones_like(v)).cpu().numpy().astype(np.float32)

    def prompted(self, frame_idx: int, slots, low_res_masks: torch.Tensor, mem: torch.Tensor) -> None:
        """Record a prompted frame's memories (stored in `slots`, -1 = lane not prompted)."""
        area, cen, d = self.candidate_stats(low_res_masks, mem)
        self._store(slots, frame_idx, area, cen, d)
        lanes = np.asarray(slots) >= 0
        self.prev_centroid = np.where(lanes[:, None], cen, self.prev_centroid)

    def stored(self, slots) -> None:
        """Record where the candidate of the last `build` went; slot -1 = not stored."""
        self._store(slots, *self._pending)

    def _store(self, slots, frame_idx, area, cen, d) -> None:
        for b, s in enumerate(slots):
            if s < 0:
                continue
            self.area[b, s], self.centroid[b, s], self.desc[b, s] = area[b], cen[b], d[b]
            self.last_frame[b], self.last_area[b], self.last_desc[b] = frame_idx, area[b], d[b]
