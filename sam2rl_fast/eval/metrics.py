"""Video object segmentation metrics as the DAVIS benchmark defines them.

J: region similarity (IoU); F: boundary F-measure with a tolerance of 0.8% of the image
diagonal; J&F: their mean. Empty prediction vs empty ground truth counts as perfect
(J = F = 1), as in DAVIS.
"""

from __future__ import annotations

import math

import numpy as np


def _as_bool(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != bool:
        raise TypeError(f"{name} must be a boolean mask, got dtype {a.dtype}")
    return a


def _check_pair(pred, gt, ndim: int | None = None):
    pred, gt = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    if ndim is not None and pred.ndim != ndim:
        raise ValueError(f"expected {ndim}-d masks, got shape {pred.shape}")
    return pred, gt


def iou(pred, gt) -> np.ndarray:
    """Region IoU over the last two axes; 1 where both masks are empty."""
    pred, gt = _check_pair(pred, gt)
    inter = np.logical_and(pred, gt).sum(axis=(-2, -1))
    union = np.logical_or(pred, gt).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a boolean [H, W] mask (DAVIS `seg2bmap` at full resolution)."""
    m = mask.astype(bool)
    e = np.zeros_like(m)
    s = np.zeros_like(m)
    se = np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels (skimage's `disk`)."""
    H, W = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy:radius + dy + H, radius + dx:radius + dx + W]
    return out


def boundary_f(pred, gt, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure of one [H, W] frame."""
    pred, gt = _check_pair(pred, gt, ndim=2)
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape)))
    fb, gb = boundary_map(pred), boundary_map(gt)
    n_f, n_g = int(fb.sum()), int(gb.sum())
    if n_f == 0 and n_g == 0:
        return 1.0
    if n_f == 0 or n_g == 0:
        return 0.0  # precision or recall is 0
    precision = float((fb & _dilate(gb, radius)).sum()) / n_f
    recall = float((gb & _dilate(fb, radius)).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def frame_scores(pred, gt, bound_th: float = 0.008) -> tuple[float, float]:
    """(J, F) of one [H, W] frame (J is 1 where both masks are empty)."""
    pred, gt = _check_pair(pred, gt, ndim=2)
    return float(iou(pred, gt)), boundary_f(pred, gt, bound_th)


def db_statistics(values) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame J or F, as the DAVIS 2017 toolkit:
    recall is the share of frames above 0.5 (a NaN frame is not above); decay is the mean of the first quarter minus
    the mean of the last, quarters cut at round(linspace(1, n, 5)) - 1 (NaNs ignored).

    The toolkit stores those cuts as uint8, which wraps past 255 frames; here they are
    plain integers (the same numbers on every video of up to 256 scored frames)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    def nanmean(x):
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return nanmean(v), float(np.mean(v > 0.5)), nanmean(bins[0]) - nanmean(bins[3])


def evaluate_video(pred, gt, skip_first: bool = True) -> dict:
    """J, F and J&F of one video, per object and overall.

    Args:
        pred, gt: boolean `[T, n_obj, H, W]`.
        skip_first: DAVIS leaves out the prompted first frame.

    Returns:
        dict with ``J``, ``F``, ``JF`` (means over objects and frames), ``J_per_object``,
        ``F_per_object`` and ``iou_per_frame`` `[T, n_obj]` (all frames).
    """
    pred, gt = _check_pair(pred, gt, ndim=4)
    per_frame = iou(pred, gt)  # [T, n_obj]
    frames = range(1 if skip_first and pred.shape[0] > 1 else 0, pred.shape[0])
    f = np.array([[boundary_f(pred[t, k], gt[t, k]) for k in range(pred.shape[1])]
                  for t in frames])
    j = per_frame[list(frames)]
    j_obj, f_obj = j.mean(0), f.mean(0)
    return {
        "J": float(j_obj.mean()),
        "F": float(f_obj.mean()),
        "JF": float((j_obj.mean() + f_obj.mean()) / 2),
        "J_per_object": j_obj.tolist(),
        "F_per_object": f_obj.tolist(),
        "iou_per_frame": per_frame,
    }
