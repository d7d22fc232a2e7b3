"""Textures for the synthetic videos: many kinds, so that a model trained on them tracks
looks it has never seen.

Each kind is a function of a numpy Generator and a size returning float32 [H, W, 3] in
0..255: oriented gratings, smooth (multi-octave) noise, blocky noise, linear and radial
gradients, checkers, dots, stripes, cells, and crops of the photographs scikit-image ships
in its wheel (`skimage.data`; no download). Backgrounds and object surfaces draw from the
same families, so neither "textured object on a plain background" nor its reverse is a
shortcut.
"""

from __future__ import annotations

import functools

import numpy as np

# photographs and scans inside scikit-image's wheel (loaded without a download)
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
           "immunohistochemistry", "retina", "colorwheel", "brick", "camera", "coins", "grass",
           "gravel", "moon", "page", "text", "clock", "cell")


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray | None:
    try:
        import skimage.data as data

        img = np.asarray(getattr(data, name)())
    except Exception:  # scikit-image missing or an image that needs a download: skip it
        return None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3].astype(np.float32)


def available_photos() -> tuple[str, ...]:
    return tuple(n for n in _PHOTOS if _photo(n) is not None)


def _colors(rng, n) -> np.ndarray:
    return rng.uniform(0, 255, (n, 3)).astype(np.float32)


def _resize(img: np.ndarray, H: int, W: int) -> np.ndarray:
    """Nearest-neighbour resize by index (cheap; the callers blur or jitter anyway)."""
    ys = np.minimum((np.arange(H) * img.shape[0] / H).astype(int), img.shape[0] - 1)
    xs = np.minimum((np.arange(W) * img.shape[1] / W).astype(int), img.shape[1] - 1)
    return img[ys][:, xs]


def _bilinear_up(small: np.ndarray, H: int, W: int) -> np.ndarray:
    h, w = small.shape[:2]
    y = np.linspace(0, h - 1, H, dtype=np.float32)
    x = np.linspace(0, w - 1, W, dtype=np.float32)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    a = small[y0][:, x0] * (1 - fx) + small[y0][:, x1] * fx
    b = small[y1][:, x0] * (1 - fx) + small[y1][:, x1] * fx
    return a * (1 - fy) + b * fy


def _palette_map(field: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Map a scalar field in [0, 1] [H, W] through a piecewise-linear colour ramp [K, 3]."""
    k = len(colors) - 1
    f = np.clip(field, 0, 1) * k
    i = np.minimum(f.astype(int), k - 1)
    t = (f - i)[..., None]
    return colors[i] * (1 - t) + colors[i + 1] * t


def gratings(rng, H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        f = rng.uniform(0.02, 0.3)
        a = rng.uniform(0, np.pi)
        wave = 0.5 + 0.5 * np.sin(f * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 6.3))
        img += wave[..., None] * rng.uniform(0, 90, 3)
    return img


def smooth_noise(rng, H, W):
    field = np.zeros((H, W), np.float32)
    amp, total = 1.0, 0.0
    base = int(rng.integers(2, 6))
    for octave in range(int(rng.integers(2, 5))):
        n = base * 2 ** octave
        field += amp * _bilinear_up(rng.random((n, n, 1)).astype(np.float32), H, W)[..., 0]
        total += amp
        amp *= rng.uniform(0.35, 0.7)
    field = field / total
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    return _palette_map(field, _colors(rng, int(rng.integers(2, 5))))


def blocky_noise(rng, H, W):
    cell = int(rng.integers(3, max(4, min(H, W) // 6)))
    small = _colors(rng, (H // cell + 1) * (W // cell + 1)).reshape(H // cell + 1, W // cell + 1, 3)
    if rng.random() < 0.5:  # a few colours only (a mosaic) rather than uniform noise
        pal = _colors(rng, int(rng.integers(2, 6)))
        small = pal[rng.integers(len(pal), size=small.shape[:2])]
    return _resize(small, H, W)


def gradient(rng, H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        field = xx * np.cos(a) + yy * np.sin(a)
    else:
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        field = np.hypot(yy - cy, xx - cx)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    return _palette_map(field, _colors(rng, int(rng.integers(2, 4))))


def checker(rng, H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    p = rng.uniform(4, max(5, min(H, W) / 4))
    a = rng.uniform(0, np.pi / 2)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    c = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(bool)
    cols = _colors(rng, 2)
    return np.where(c[..., None], cols[0], cols[1])


def stripes(rng, H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    a = rng.uniform(0, np.pi)
    p = rng.uniform(3, max(4, min(H, W) / 5))
    s = (np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / p) > rng.uniform(-0.5, 0.5))
    cols = _colors(rng, 2)
    return np.where(s[..., None], cols[0], cols[1])


def dots(rng, H, W):
    img = np.broadcast_to(_colors(rng, 1)[0], (H, W, 3)).copy()
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cols = _colors(rng, 3)
    for _ in range(int(rng.integers(5, 40))):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(1.5, max(2, min(H, W) / 8))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = cols[rng.integers(3)]
    return img


def cells(rng, H, W):
    """Voronoi cells of a few random colours."""
    n = int(rng.integers(6, 40))
    pts = rng.uniform([0, 0], [H, W], (n, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    lab = d.argmin(-1)
    return _colors(rng, n)[lab]


def photo(rng, H, W):
    names = available_photos()
    if not names:
        return smooth_noise(rng, H, W)
    img = _photo(names[int(rng.integers(len(names)))])
    zoom = rng.uniform(0.5, 2.0)
    ch, cw = min(img.shape[0], max(8, int(H / zoom))), min(img.shape[1], max(8, int(W / zoom)))
    y0 = int(rng.integers(0, img.shape[0] - ch + 1))
    x0 = int(rng.integers(0, img.shape[1] - cw + 1))
    crop = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = _bilinear_up(crop, H, W) if ch < H or cw < W else _resize(crop, H, W)
    # colour jitter: a random channel mix keeps the structure, changes the look
    mix = np.eye(3, dtype=np.float32) * rng.uniform(0.6, 1.2) + rng.normal(0, 0.15, (3, 3))
    return out @ mix.T.astype(np.float32) + rng.uniform(-30, 30, 3).astype(np.float32)


KINDS = {"gratings": gratings, "smooth-noise": smooth_noise, "blocky-noise": blocky_noise,
         "gradient": gradient, "checker": checker, "stripes": stripes, "dots": dots,
         "cells": cells, "photo": photo}


def random_texture(rng, H, W, kinds=None, noise: float | None = None) -> tuple[str, np.ndarray]:
    """(kind, float32 [H, W, 3]) of a texture of a random kind (or one of `kinds`), with
    pixel noise of a random level unless `noise` is given."""
    names = list(kinds or KINDS)
    kind = names[int(rng.integers(len(names)))]
    img = KINDS[kind](rng, H, W).astype(np.float32)
    sigma = rng.uniform(0, 14) if noise is None else noise
    if sigma > 0:
        img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    return kind, img
