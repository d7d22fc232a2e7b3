"""One object of a synthetic video: its look (a shape and a texture tile), its path, and how it
is drawn in a frame. `sam2rl_fast.data.synthetic` composes them into scenes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam2rl_fast.data.textures import random_texture

SHAPES = ("ellipse", "rectangle", "diamond", "star", "triangle", "blob")
TILE = 64  # side of an object's texture tile (object coordinates)


# ------------------------------------------------------------------ appearance
@dataclass
class Look:
    """What an object looks like: a shape (a radius function of the angle in its
    normalised frame), half-axes and a texture tile in object coordinates."""

    shape: str
    harmonics: np.ndarray  # [K, 2] blob amplitude and phase (blob only)
    size: np.ndarray  # [2] half-axes in pixels
    tile: np.ndarray  # [TILE, TILE, 3] float32


def radius(look: Look, theta: np.ndarray) -> np.ndarray:
    s = look.shape
    if s == "ellipse":
        return np.ones_like(theta)
    if s == "rectangle":
        return 1.0 / np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))
    if s == "diamond":
        return 1.0 / (np.abs(np.cos(theta)) + np.abs(np.sin(theta)))
    if s == "star":
        return 0.75 + 0.25 * np.cos(5 * theta)
    if s == "triangle":
        return 0.5 / np.cos((theta % (2 * np.pi / 3)) - np.pi / 3) * 1.6
    r = np.ones_like(theta)
    for k, (amp, ph) in enumerate(look.harmonics, start=2):
        r = r + amp * np.cos(k * theta + ph)
    return r


def random_look(rng, H, W) -> Look:
    s = min(H, W)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    harmonics = np.stack([rng.uniform(0, 0.25, 4) / np.arange(1, 5) ** 0.5,
                          rng.uniform(0, 2 * np.pi, 4)], 1)
    size = np.array([rng.uniform(0.07, 0.15) * s, rng.uniform(0.06, 0.13) * s])
    _, tile = random_texture(rng, TILE, TILE, noise=rng.uniform(0, 8))
    return Look(shape, harmonics, size, tile)


def lookalike(rng, look: Look, exact: bool) -> Look:
    tile = look.tile if exact else look.tile + rng.normal(0, 12, 3).astype(np.float32)
    return Look(look.shape, look.harmonics.copy(), look.size.copy(), tile)


def drifted(rng, look: Look, H, W) -> Look:
    """Where a drifting look ends: a new texture and colour, a changed shape and size."""
    end = random_look(rng, H, W)
    end.size = look.size * rng.uniform(0.75, 1.3, 2)
    return end


# ------------------------------------------------------------------ motion
@dataclass
class Track:
    pos: np.ndarray  # [T, 2] x, y
    angle: np.ndarray  # [T]
    visible: np.ndarray  # [T] bool: drawn (False while out of view)


def simulate(rng, T, H, W, speed, transform, jumps=(), exit_span=None) -> Track:
    pos = rng.uniform([0.25 * W, 0.25 * H], [0.75 * W, 0.75 * H])
    ang = rng.uniform(0, 2 * np.pi)
    vel = speed * (min(H, W) / 128) * np.array([np.cos(ang), np.sin(ang)])
    wander = rng.uniform(0, 0.15) * speed * (min(H, W) / 128)
    angle, spin = rng.uniform(0, np.pi), rng.normal(0, 0.03)
    P, A = np.zeros((T, 2)), np.zeros(T)
    for t in range(T):
        if t > 0:
            vel = vel + rng.normal(0, wander, 2)  # curved, not only straight paths
            pos = pos + vel
            angle += spin + transform * 0.02
            if t in jumps:  # abrupt motion
                pos = pos + rng.uniform(-0.3, 0.3, 2) * np.array([W, H])
            for d, lim in ((0, W), (1, H)):  # bounce off the borders
                if (pos[d] < 0.1 * lim and vel[d] < 0) or (pos[d] > 0.9 * lim and vel[d] > 0):
                    vel[d] = -vel[d]
                pos[d] = float(np.clip(pos[d], 0.05 * lim, 0.95 * lim))
        P[t], A[t] = pos, angle
    visible = np.ones(T, bool)
    if exit_span is not None:
        visible[exit_span[0]:exit_span[0] + exit_span[1]] = False
    return Track(P, A, visible)


def crossing_track(rng, target: Track, T, H, W, speed) -> Track:
    """A straight path through the target's position at a random frame."""
    tc = int(rng.integers(T // 5, max(T // 5 + 1, (4 * T) // 5)))
    ang = rng.uniform(0, 2 * np.pi)
    v = speed * rng.uniform(0.8, 1.5) * (min(H, W) / 128) * np.array([np.cos(ang), np.sin(ang)])
    P = target.pos[tc] + v * (np.arange(T)[:, None] - tc)
    A = np.full(T, rng.uniform(0, np.pi)) + np.arange(T) * rng.normal(0, 0.03)
    return Track(P, A, np.ones(T, bool))


# ------------------------------------------------------------------ rendering
def render_object(look: Look, end: Look | None, alpha: float, cx: float, cy: float, angle: float,
            scale: float, H: int, W: int):
    """(y0, x0, mask [h, w], colour [h, w, 3]) of an object in a window around it, or None."""
    size = look.size if end is None else (1 - alpha) * look.size + alpha * end.size
    a, b = size * scale
    R = 1.8 * max(a, b)
    y0, y1 = max(0, int(cy - R)), min(H, int(cy + R) + 1)
    x0, x1 = max(0, int(cx - R)), min(W, int(cx + R) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / a
    v = (-(xx - cx) * s + (yy - cy) * c) / b
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    r = radius(look, theta) if end is None else (1 - alpha) * radius(look, theta) + alpha * radius(end, theta)
    m = rho <= r
    ti = np.clip(((v / 3 + 0.5) * (TILE - 1)).astype(int), 0, TILE - 1)
    tj = np.clip(((u / 3 + 0.5) * (TILE - 1)).astype(int), 0, TILE - 1)
    colour = look.tile[ti, tj]
    if end is not None:
        colour = (1 - alpha) * colour + alpha * end.tile[ti, tj]
    return y0, x0, m, colour
