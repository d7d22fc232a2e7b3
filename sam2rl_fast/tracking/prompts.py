"""Prompts of `FastTracker`: parsing each object's prompt, and which frame each object starts on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.tracking.video import float_range


@dataclass
class Prompt:
    """One object's prompt on one frame, as `parse_prompt` makes it."""

    kind: str  # "mask" | "box" | "points"
    mask: np.ndarray | None = None  # [H, W] bool
    points: np.ndarray | None = None  # [N, 2] (x, y) pixels
    labels: np.ndarray | None = None  # [N] int: 1 positive, 0 negative, 2/3 box corners


class PromptError(ValueError):
    """A prompt that does not fit the video or names no object."""


def mask_from_array(a: np.ndarray, what: str) -> np.ndarray:
    """A mask prompt as bool [H, W], by one rule: bool as it is; integers 0 / nonzero (one
    object: a label image with several ids is refused); floats are probabilities in [0, 1],
    the object where >= 0.5 (so a soft mask with 0.01 background is the object, not the
    frame). NaN and values outside those ranges are errors."""
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        ids = np.unique(a[a != 0])
        if len(ids) > 1:
            raise PromptError(f"{what}: the mask holds several ids {ids[:8].tolist()}; give one "
                              "mask per object (e.g. label == k)")
        if (a < 0).any():
            raise PromptError(f"{what}: mask values must be 0 (background) or one id, got negatives")
        return a != 0
    if np.issubdtype(a.dtype, np.floating):
        float_range(a, what, "mask", (1.0,), PromptError,
                    "a float mask holds probabilities, the object where >= 0.5")
        return a >= 0.5
    raise PromptError(f"{what}: a mask must be bool, integer or float, got {a.dtype}")


def parse_prompt(p, H: int, W: int, obj) -> Prompt:
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().numpy()
    if isinstance(p, np.ndarray) and p.ndim == 2:
        if p.shape != (H, W):
            raise PromptError(f"object {obj!r}: mask is {p.shape[1]}x{p.shape[0]}, the video {W}x{H}")
        m = mask_from_array(p, f"object {obj!r}")
        if not m.any():
            raise PromptError(f"object {obj!r}: the prompt mask is empty")
        return Prompt("mask", mask=m)
    if isinstance(p, (tuple, list, np.ndarray)) and len(p) == 4 and np.isscalar(p[0]):
        x0, y0, x1, y1 = (float(v) for v in p)
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise PromptError(f"object {obj!r}: box {tuple(p)} is not a box (x0 < x1, y0 < y1) "
                              f"inside the {W}x{H} frame")
        return Prompt("box", points=np.array([[x0, y0], [x1, y1]], np.float32),
                      labels=np.array([2, 3], np.int32))
    if isinstance(p, (tuple, list)) and len(p) == 2:
        pts = np.asarray(p[0], np.float32).reshape(-1, 2)
        lab = np.asarray(p[1], np.int32).reshape(-1)
        if len(pts) == 0 or len(pts) != len(lab):
            raise PromptError(f"object {obj!r}: {len(pts)} points with {len(lab)} labels")
        if ((pts < 0) | (pts > [W, H])).any():
            raise PromptError(f"object {obj!r}: points {pts.tolist()} lie outside the {W}x{H} frame")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"object {obj!r}: point labels must be 1 (object) or 0 (background)")
        return Prompt("points", points=pts, labels=lab)
    raise PromptError(f"object {obj!r}: a prompt is a bool mask [H, W], a box (x0, y0, x1, y1) "
                      f"or (points [N, 2], labels [N]); got {type(p).__name__}")


def split_prompt(prompt) -> tuple[dict, dict]:
    """({frame: {obj: p}} sorted by frame, empty frames dropped; {obj: start frame}).

    An object starts on the earliest frame that names it; prompts on its later frames
    correct it. The start dict's order is the objects' order: by start frame, then as
    each frame's dict lists them."""
    if not isinstance(prompt, dict) or not prompt:
        raise PromptError("prompt must be a non-empty dict {obj_id: mask | box | (points, labels)} "
                          "or {frame_idx: {obj_id: ...}}")
    if not all(isinstance(v, dict) for v in prompt.values()):
        frames = {0: prompt}
    else:
        frames = {int(f): v for f, v in sorted(prompt.items()) if v}
        if not frames:
            raise PromptError("every frame's prompt dict is empty: name at least one object")
        first = next(iter(frames))
        if first < 0:
            raise PromptError(f"prompt frame {first} is negative")
    starts: dict = {}
    for f, objs in frames.items():
        for o in objs:
            starts.setdefault(o, f)
    return frames, starts
