"""SAMURAI (Yang et al., 2024; yangchris11/samurai), reimplemented from its published rule.

Mask choice: once the Kalman filter on the object's box has been stable for 15 frames,
the decoder's candidates are ranked by 0.15 * IoU(Kalman prediction, candidate box) +
0.85 * predicted IoU instead of the predicted IoU alone. Memory: a frame is stored only if
its predicted IoU > 0.5, its object score > 0 and its motion score > 0 (when defined);
stored frames replace the oldest, so the bank holds the 6 most recent frames that passed.
"""

from __future__ import annotations

import numpy as np
import torch

from sam2rl_fast.policies.base import (
    MemoryObservation,
    MemoryPolicy,
    oldest_replaceable,
)
from sam2rl_fast.policies.kalman import BoxKalman
from sam2rl_fast.policies.mask_stats import box_iou_matrix, mask_boxes


class SamuraiPolicy(MemoryPolicy):
    name = "samurai"

    def __init__(self, kf_score_weight=0.15, stable_frames_threshold=15, stable_ious_threshold=0.3,
                 iou_threshold=0.5, obj_score_threshold=0.0, kf_score_threshold=0.0):
        self.kf_score_weight = kf_score_weight
        self.stable_frames_threshold = stable_frames_threshold
        self.stable_ious_threshold = stable_ious_threshold
        self.iou_threshold = iou_threshold
        self.obj_score_threshold = obj_score_threshold
        self.kf_score_threshold = kf_score_threshold

    def reset(self, num_objects, capacity, stock):
        super().reset(num_objects, capacity, stock)
        self.kf = [BoxKalman() for _ in range(num_objects)]
        self.stable = [0] * num_objects
        self._kf_score = np.full(num_objects, np.nan)

    def choose_mask(self, multimasks, ious, obj_scores):
        boxes = mask_boxes(multimasks > 0).cpu().numpy()  # [B, K, 4]
        iou = ious.detach().float().cpu().numpy()
        choice = np.zeros(len(iou), dtype=np.int64)
        for b in range(len(iou)):
            choice[b], self._kf_score[b] = self._choose_one(b, boxes[b], iou[b])
        return torch.as_tensor(choice, device=ious.device)

    def _choose_one(self, b, boxes, iou):
        kf, best = self.kf[b], int(np.argmax(iou))
        if kf.mean is None or self.stable[b] == 0:
            kf.initiate(boxes[best])
            self.stable[b] += 1
            return best, np.nan
        pred = kf.predict()
        if self.stable[b] < self.stable_frames_threshold:
            if iou[best] > self.stable_ious_threshold:
                kf.update(boxes[best])
                self.stable[b] += 1
            else:
                self.stable[b] = 0
            return best, np.nan
        kf_ious = box_iou_matrix(torch.from_numpy(pred)[None], torch.from_numpy(boxes)).numpy()
        w = self.kf_score_weight
        best = int(np.argmax(w * kf_ious + (1 - w) * iou))
        kf.update(boxes[best])
        if iou[best] < self.stable_ious_threshold:
            self.stable[b] = 0
        return best, float(kf_ious[best])

    def motion_scores(self):
        return self._kf_score.copy()

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        act = np.full(obs.num_objects, -1, dtype=np.int64)
        for b in range(obs.num_objects):
            kf = np.nan if obs.motion_score is None else obs.motion_score[b]
            if (obs.iou[b] > self.iou_threshold and obs.obj_score[b] > self.obj_score_threshold
                    and (np.isnan(kf) or kf > self.kf_score_threshold)):
                act[b] = oldest_replaceable(obs, b)
        return act
