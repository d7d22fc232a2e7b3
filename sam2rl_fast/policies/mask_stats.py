"""Per-mask statistics the observation and the heuristics use (boxes, areas, centroids)."""

from __future__ import annotations

import torch


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) boxes [..., 4] of boolean masks [..., h, w]; zeros for empty masks."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)  # [..., h], [..., w]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h, -1).amax(-1) + 1
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1) + 1
    box = torch.stack([x0, y0, x1, y1], -1).float()
    return torch.where(rows.any(-1, keepdim=True), box, torch.zeros_like(box))


def mask_centroids(masks: torch.Tensor) -> torch.Tensor:
    """Centroids (x, y) [..., 2] of boolean masks [..., h, w] in [0, 1] units; NaN when empty."""
    h, w = masks.shape[-2:]
    m = masks.float()
    area = m.sum((-2, -1))
    ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
    xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
    cx = (m.sum(-2) * xs).sum(-1) / area
    cy = (m.sum(-1) * ys).sum(-1) / area
    return torch.stack([cx, cy], -1)


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of boxes a, b [..., 4] (broadcast); 0 where the union is empty."""
    ix = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    iy = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
