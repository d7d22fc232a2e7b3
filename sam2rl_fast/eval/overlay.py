"""Pictures of tracking: masks and memory decisions drawn over the frames."""

from __future__ import annotations

import numpy as np

# DAVIS palette colours for objects 1..n (index 0 is the background).
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                    [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0]], np.uint8)
BRIGHT = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                   [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def color(k: int) -> np.ndarray:
    return BRIGHT[k % len(BRIGHT)]


def index_mask(masks: np.ndarray) -> np.ndarray:
    """[H, W] uint8: 0 background, k + 1 where object k is (later objects drawn on top)."""
    out = np.zeros(masks.shape[-2:], np.uint8)
    for k, m in enumerate(masks):
        out[m] = k + 1
    return out


def save_index_png(masks: np.ndarray, path) -> None:
    """A DAVIS-style palettised PNG of [n_obj, H, W] masks."""
    from PIL import Image

    img = Image.fromarray(index_mask(masks), mode="P")
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(PALETTE)] = PALETTE
    img.putpalette(pal.reshape(-1).tolist())
    img.save(path)


def draw(frame: np.ndarray, masks: np.ndarray, labels: list[str] | None = None,
         caption: str | None = None, alpha: float = 0.5) -> np.ndarray:
    """Frame [H, W, 3] with masks [n_obj, H, W] tinted and outlined, object labels and a caption."""
    from PIL import Image, ImageDraw

    out = frame.astype(np.float32)
    for k, m in enumerate(masks):
        if not m.any():
            continue
        c = color(k).astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * c
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        out[edge] = c
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if labels:
        for k, (m, text) in enumerate(zip(masks, labels)):
            if m.any():
                ys, xs = np.nonzero(m)
                d.text((int(xs.min()), max(int(ys.min()) - 11, 0)), text, fill=tuple(int(v) for v in color(k)))
    if caption:
        d.rectangle([0, 0, 7 * len(caption) + 6, 13], fill=(0, 0, 0))
        d.text((3, 1), caption, fill=(255, 255, 255))
    return np.asarray(img)


def decision_text(slot: int) -> str:
    """How a memory decision reads on a frame."""
    return f"mem->slot {slot}" if slot >= 0 else ("not tracked" if slot < -1 else "not stored")
