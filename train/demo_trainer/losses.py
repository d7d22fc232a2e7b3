"""SAM 2.1's training losses (sam2's `training/loss_fns.py`, `MultiStepMultiMasksAndIous`):
focal (20) + dice (1) on the best of the candidate masks, L1 between the predicted and the
actual IoU of every candidate (1), binary cross-entropy of the object score against
"target visible" (1); mask and IoU terms only on frames where the target is visible.
Frames prompted with the ground-truth mask carry no loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# SAM 2.1's loss weights (sam2.1 training config).
LOSS_WEIGHTS = {"mask": 20.0, "dice": 1.0, "iou": 1.0, "class": 1.0}

def _focal(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """sam2's sigmoid focal loss, averaged over pixels: [B, M, H, W] -> [B, M]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def _dice(logits, targets):
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    num = 2 * (prob * targets).sum(-1)
    den = prob.sum(-1) + targets.sum(-1)
    return 1 - (num + 1) / (den + 1)


def frame_losses(multimasks, ious, score_logits, target) -> dict:
    """sam2's MultiStepMultiMasksAndIous terms for one frame, summed over the batch.

    multimasks [B, M, S, S] logits, ious [B, M], score_logits [B, 1], target [B, S, S]."""
    multimasks = multimasks.float()
    tgt = target.float()[:, None].expand_as(multimasks)
    focal = _focal(multimasks, tgt)
    dice = _dice(multimasks, tgt)
    with torch.no_grad():
        pred, gt = multimasks.flatten(2) > 0, tgt.flatten(2) > 0
        actual_iou = (pred & gt).sum(-1).float() / (pred | gt).sum(-1).float().clamp(min=1.0)
    iou_l1 = (ious.float() - actual_iou).abs()
    present = target.flatten(1).any(1).float()  # [B]
    best = torch.argmin(focal * LOSS_WEIGHTS["mask"] + dice * LOSS_WEIGHTS["dice"], dim=-1)
    rows = torch.arange(multimasks.shape[0], device=multimasks.device)
    cls = F.binary_cross_entropy_with_logits(score_logits.float().view(-1), present,
                                             reduction="none")
    return {"mask": (focal[rows, best] * present).sum(), "dice": (dice[rows, best] * present).sum(),
            "iou": (iou_l1.mean(-1) * present).sum(), "class": cls.sum()}


def clip_loss(outs, masks) -> tuple[torch.Tensor, dict]:
    """Weighted total over supervised frames, per clip and per frame (a mean, so that its
    scale does not depend on B or T); also the unweighted terms as floats."""
    terms = {k: 0.0 for k in LOSS_WEIGHTS}
    n = 0
    for t, o in enumerate(outs):
        if not o["supervised"]:
            continue
        fl = frame_losses(o["multimasks"], o["ious"], o["object_score_logits"], masks[:, t])
        for k in terms:
            terms[k] = terms[k] + fl[k]
        n += 1
    denom = max(n, 1) * masks.shape[0]
    terms = {k: v / denom for k, v in terms.items()}
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
