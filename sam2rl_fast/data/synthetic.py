"""Deterministic synthetic videos with ground-truth masks, built for memory control.

Each video has a background and target objects drawn from many texture families
(`sam2rl_fast.data.textures`: gratings, smooth and blocky noise, gradients, checkers,
dots, cells, photographs) and many shapes (ellipses, boxes, diamonds, stars, triangles,
random blobs), moving with drift and bounces. Depending on its suite, also look-alike
**distractors** (some crossing the target's path), **occluders** that hide a target
completely, targets that **leave and re-enter** the view, **fast abrupt motion**, scale /
rotation / lighting change, and **appearance drift** (the target's texture, colour and
shape change steadily while look-alikes keep its first-frame look). Ground truth is the
*visible* part of each target: a fully occluded or out-of-view target has an empty mask.

The suites where the prompt alone is not enough, and what the memory holds decides:
`drift`, `long-occlusion` (hidden or out of view for 8+ frames, longer than the bank's six
recent frames, moving and changing meanwhile) and `look-alike` (identical copies crossing
the target's path: position and recent appearance are the only cues).

Suites have fixed, disjoint seed ranges for training and held-out evaluation:

    video = generate_video("occlusion", seed=suite_seeds("occlusion", "heldout")[0])
    video.frames  # [T, H, W, 3] uint8
    video.masks   # [T, n_obj, H, W] bool
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2rl_fast.data.textures import random_texture


@dataclass(frozen=True)
class SuiteSpec:
    num_targets: int = 1
    num_distractors: int = 0
    num_occluders: int = 0
    occlusion_frames: tuple[int, int] = (3, 6)  # length of an occlusion, inclusive range
    leave_view: bool = False
    exit_frames: tuple[int, int] = (4, 7)  # length of an exit from the view
    jumps: int = 0  # abrupt displacements of the target
    speed: float = 1.5  # pixels per frame (at 128 px)
    transform: float = 0.0  # amount of scale / rotation / lighting change
    drift: float = 0.0  # how far the target's appearance moves from its first look (0..1)
    crossing: bool = False  # distractors are aimed through the target's path
    lookalike_exact: bool = False  # distractors are exact copies (else a slight colour change)


SUITES: dict[str, SuiteSpec] = {
    "easy": SuiteSpec(speed=1.5, transform=0.3),
    "occlusion": SuiteSpec(num_occluders=1, speed=1.5, transform=0.3),
    "distractor": SuiteSpec(num_distractors=2, speed=2.0, transform=0.3),
    "fast-motion": SuiteSpec(jumps=3, speed=4.0, transform=0.5),
    "mixed": SuiteSpec(num_targets=2, num_distractors=1, num_occluders=1, leave_view=True,
                       jumps=1, speed=2.5, transform=0.6),
    "drift": SuiteSpec(num_distractors=2, speed=1.5, transform=0.3, drift=1.0),
    "long-occlusion": SuiteSpec(num_occluders=1, occlusion_frames=(8, 14), speed=1.5,
                                transform=0.4, drift=0.4, num_distractors=1),
    "look-alike": SuiteSpec(num_distractors=2, speed=2.0, transform=0.3, drift=0.3,
                            crossing=True, lookalike_exact=True),
}
# the suites where what the memory holds decides (see the module docstring)
MEMORY_SUITES = ("drift", "long-occlusion", "look-alike")
_SPLITS = {"train": (0, 100_000), "heldout": (1_000_000, 1_000_100)}
SHAPES = ("ellipse", "rectangle", "diamond", "star", "triangle", "blob")
_TILE = 64  # side of an object's texture tile (object coordinates)


def suite_seeds(suite: str, split: str = "heldout", count: int | None = None) -> range:
    """The fixed seed range of a suite's split ('train' or 'heldout'); disjoint by construction."""
    _spec(suite)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    lo, hi = _SPLITS[split]
    return range(lo, hi if count is None else min(hi, lo + count))


@dataclass
class SyntheticVideo:
    suite: str
    seed: int
    frames: np.ndarray  # [T, H, W, 3] uint8
    masks: np.ndarray  # [T, n_obj, H, W] bool, visible part of each target
    occluded: np.ndarray  # [T, n_obj] bool: target present in the scene but fully hidden
    out_of_view: np.ndarray  # [T, n_obj] bool: target outside the frame
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.seed}"

    def first_frame_boxes(self) -> dict[int, tuple[int, int, int, int]]:
        """{obj_id: (x0, y0, x1, y1)} of each target on frame 0 (a box prompt)."""
        boxes = {}
        for k in range(self.masks.shape[1]):
            ys, xs = np.nonzero(self.masks[0, k])
            boxes[k] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        return boxes


def _spec(suite: str) -> SuiteSpec:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    return SUITES[suite]


# ------------------------------------------------------------------ appearance
@dataclass
class _Look:
    """What an object looks like: a shape (a radius function of the angle in its
    normalised frame), half-axes and a texture tile in object coordinates."""

    shape: str
    harmonics: np.ndarray  # [K, 2] blob amplitude and phase (blob only)
    size: np.ndarray  # [2] half-axes in pixels
    tile: np.ndarray  # [_TILE, _TILE, 3] float32


def _radius(look: _Look, theta: np.ndarray) -> np.ndarray:
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


def _random_look(rng, H, W) -> _Look:
    s = min(H, W)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    harmonics = np.stack([rng.uniform(0, 0.25, 4) / np.arange(1, 5) ** 0.5,
                          rng.uniform(0, 2 * np.pi, 4)], 1)
    size = np.array([rng.uniform(0.07, 0.15) * s, rng.uniform(0.06, 0.13) * s])
    _, tile = random_texture(rng, _TILE, _TILE, noise=rng.uniform(0, 8))
    return _Look(shape, harmonics, size, tile)


def _lookalike(rng, look: _Look, exact: bool) -> _Look:
    tile = look.tile if exact else look.tile + rng.normal(0, 12, 3).astype(np.float32)
    return _Look(look.shape, look.harmonics.copy(), look.size.copy(), tile)


def _drifted(rng, look: _Look, H, W) -> _Look:
    """Where a drifting look ends: a new texture and colour, a changed shape and size."""
    end = _random_look(rng, H, W)
    end.size = look.size * rng.uniform(0.75, 1.3, 2)
    return end


def _blend(a: _Look, b: _Look, alpha: float) -> tuple[_Look, _Look | None, float]:
    return a, (b if alpha > 0 else None), alpha


# ------------------------------------------------------------------ motion
@dataclass
class _Track:
    pos: np.ndarray  # [T, 2] x, y
    angle: np.ndarray  # [T]
    visible: np.ndarray  # [T] bool: drawn (False while out of view)


def _simulate(rng, T, H, W, speed, transform, jumps=(), exit_span=None) -> _Track:
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
    return _Track(P, A, visible)


def _crossing_track(rng, target: _Track, T, H, W, speed) -> _Track:
    """A straight path through the target's position at a random frame."""
    tc = int(rng.integers(T // 5, max(T // 5 + 1, (4 * T) // 5)))
    ang = rng.uniform(0, 2 * np.pi)
    v = speed * rng.uniform(0.8, 1.5) * (min(H, W) / 128) * np.array([np.cos(ang), np.sin(ang)])
    P = target.pos[tc] + v * (np.arange(T)[:, None] - tc)
    A = np.full(T, rng.uniform(0, np.pi)) + np.arange(T) * rng.normal(0, 0.03)
    return _Track(P, A, np.ones(T, bool))


# ------------------------------------------------------------------ rendering
def _render(look: _Look, end: _Look | None, alpha: float, cx: float, cy: float, angle: float,
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
    r = _radius(look, theta) if end is None else (1 - alpha) * _radius(look, theta) + alpha * _radius(end, theta)
    m = rho <= r
    ti = np.clip(((v / 3 + 0.5) * (_TILE - 1)).astype(int), 0, _TILE - 1)
    tj = np.clip(((u / 3 + 0.5) * (_TILE - 1)).astype(int), 0, _TILE - 1)
    colour = look.tile[ti, tj]
    if end is not None:
        colour = (1 - alpha) * colour + alpha * end.tile[ti, tj]
    return y0, x0, m, colour


def generate_video(suite: str, seed: int, num_frames: int = 24, height: int = 128,
                   width: int = 128) -> SyntheticVideo:
    """Render one video of `suite` from `seed` (deterministic)."""
    spec = _spec(suite)
    if num_frames < 2 or height < 32 or width < 32:
        raise ValueError("need num_frames >= 2 and frames of at least 32x32 pixels")
    rng = np.random.default_rng([zlib.crc32(suite.encode()), seed])
    T, H, W = num_frames, height, width
    bg_kind, bg = random_texture(rng, H, W)
    looks = [_random_look(rng, H, W) for _ in range(spec.num_targets)]
    ends = [_drifted(rng, lk, H, W) if spec.drift > 0 else None for lk in looks]

    def span(lo_hi, lo_start):  # (start, length) of an interval that ends before the video does
        lo, hi = lo_hi
        length = int(rng.integers(lo, hi + 1))
        length = max(1, min(length, T - lo_start - 2))
        start = int(rng.integers(lo_start, max(lo_start + 1, T - length - 1)))
        return start, length

    jump_frames = set(rng.choice(np.arange(2, T), size=min(spec.jumps, T - 2), replace=False).tolist())
    leave = span(spec.exit_frames, max(1, T // 4)) if spec.leave_view else None
    targets = [_simulate(rng, T, H, W, spec.speed, spec.transform,
                         jump_frames if k == 0 else (), leave if k == 0 else None)
               for k in range(spec.num_targets)]
    d_looks, d_tracks, d_above = [], [], []
    for i in range(spec.num_distractors):
        like = looks[i % len(looks)]
        d_looks.append(_lookalike(rng, like, spec.lookalike_exact))
        if spec.crossing:
            d_tracks.append(_crossing_track(rng, targets[i % len(targets)], T, H, W, spec.speed))
        else:
            d_tracks.append(_simulate(rng, T, H, W, spec.speed, spec.transform))
        d_above.append(bool(rng.random() < 0.5))
    # Occluders cross the first target's path: each hides it completely for its span (a
    # static textured wall over everything the target covers meanwhile, plus a margin).
    occl_plan = [span(spec.occlusion_frames, max(1, T // 4)) for _ in range(spec.num_occluders)]
    occl_tex = [random_texture(rng, H, W)[1] for _ in occl_plan]

    frames = np.zeros((T, H, W, 3), np.uint8)
    masks = np.zeros((T, spec.num_targets, H, W), bool)
    occluded = np.zeros((T, spec.num_targets), bool)
    out_of_view = np.zeros((T, spec.num_targets), bool)
    distractor_pixels = np.zeros((T, spec.num_distractors), np.int64)
    target_rendered = [[None] * T for _ in targets]
    for t in range(T):
        gain = 1.0 + spec.transform * 0.3 * np.sin(2 * np.pi * t / T + seed)
        scale = 1.0 + spec.transform * 0.25 * np.sin(2 * np.pi * t / T * 1.3 + seed)
        alpha = spec.drift * t / max(T - 1, 1)
        img = bg.copy()
        layers = []  # (target index or None, render)
        for k, tr in enumerate(targets):
            r = None
            if tr.visible[t]:
                r = _render(looks[k], ends[k], alpha, *tr.pos[t], tr.angle[t], scale, H, W)
            target_rendered[k][t] = r
            layers.append((k, r))
        for i, tr in enumerate(d_tracks):
            r = _render(d_looks[i], None, 0.0, *tr.pos[t], tr.angle[t], scale, H, W)
            if r is not None:
                distractor_pixels[t, i] = int(r[2].sum())
            # above or below the target it copies
            if d_above[i]:
                layers.append((None, r))
            else:
                layers.insert(0, (None, r))
        full = np.zeros((H, W), bool)
        for k, r in layers:  # z-order: later layers are drawn over earlier ones
            if r is None:
                continue
            y0, x0, m, colour = r
            h, w = m.shape
            full[:] = False
            full[y0:y0 + h, x0:x0 + w] = m
            img[y0:y0 + h, x0:x0 + w][m] = colour[m]
            masks[t, :, full] = False
            if k is not None:
                masks[t, k] |= full
        for k in range(len(targets)):
            if target_rendered[k][t] is None or not target_rendered[k][t][2].any():
                out_of_view[t, k] = True
        for (start, dur), tex in zip(occl_plan, occl_tex):
            if start <= t < start + dur:
                y0, y1, x0, x1 = H, 0, W, 0
                for tt in range(start, start + dur):
                    r = target_rendered[0][tt] if tt <= t else _render(
                        looks[0], ends[0], spec.drift * tt / max(T - 1, 1), *targets[0].pos[tt],
                        targets[0].angle[tt], 1.0 + spec.transform * 0.25, H, W)
                    if r is not None and r[2].any():
                        ys, xs = np.nonzero(r[2])
                        y0, y1 = min(y0, r[0] + ys.min()), max(y1, r[0] + ys.max() + 1)
                        x0, x1 = min(x0, r[1] + xs.min()), max(x1, r[1] + xs.max() + 1)
                if y0 < y1:
                    y0, y1 = max(0, y0 - 4), min(H, y1 + 4)
                    x0, x1 = max(0, x0 - 4), min(W, x1 + 4)
                    img[y0:y1, x0:x1] = tex[y0:y1, x0:x1]
                    masks[t, :, y0:y1, x0:x1] = False
                    occluded[t, 0] = not out_of_view[t, 0]
        frames[t] = np.clip(img * gain, 0, 255).astype(np.uint8)
    return SyntheticVideo(suite, seed, frames, masks, occluded, out_of_view,
                          info={"jump_frames": sorted(jump_frames), "spec": spec,
                                "background": bg_kind,
                                "target_shapes": [lk.shape for lk in looks],
                                "distractor_shapes": [lk.shape for lk in d_looks],
                                "distractor_pixels": distractor_pixels,
                                "occlusions": occl_plan, "exit": leave})


def _writable(d: Path, overwrite: bool) -> Path:
    if d.exists() and any(d.iterdir()) and not overwrite:
        raise FileExistsError(f"{d} is not empty; pass overwrite=True to replace it")
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_davis(video: SyntheticVideo, root: str | Path, overwrite: bool = False,
                annotate_every: int = 1) -> Path:
    """Write `root/JPEGImages/<name>/%05d.jpg` and `root/Annotations/<name>/%05d.png`
    (DAVIS palette PNG, 0 = background, k + 1 = object k) as DAVIS lays them out; with
    `annotate_every` n, only every n-th frame is annotated (YouTube-VOS annotates every 5th)."""
    from PIL import Image

    from sam2rl_fast.data.label_png import write_label_png

    root = Path(root)
    img_dir = _writable(root / "JPEGImages" / video.name, overwrite)
    ann_dir = _writable(root / "Annotations" / video.name, overwrite)
    for t in range(video.frames.shape[0]):
        Image.fromarray(video.frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
        if t % annotate_every:
            continue
        label = np.zeros(video.masks.shape[2:], np.uint8)
        for k in range(video.masks.shape[1]):
            label[video.masks[t, k]] = k + 1
        write_label_png(label, ann_dir / f"{t:05d}.png")
    return root


def write_sav(video: SyntheticVideo, root: str | Path, overwrite: bool = False,
              annotate_every: int = 4) -> Path:
    """Write SA-V's layout: `root/JPEGImages_24fps/<name>/%05d.jpg` and
    `root/Annotations_6fps/<name>/<obj:03d>/%05d.png` (binary 0/255, every 4th frame)."""
    from PIL import Image

    from sam2rl_fast.data.label_png import write_mask_png

    root = Path(root)
    img_dir = _writable(root / "JPEGImages_24fps" / video.name, overwrite)
    for t in range(video.frames.shape[0]):
        Image.fromarray(video.frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
    for k in range(video.masks.shape[1]):
        obj_dir = _writable(root / "Annotations_6fps" / video.name / f"{k:03d}", overwrite)
        for t in range(0, video.frames.shape[0], annotate_every):
            write_mask_png(video.masks[t, k], obj_dir / f"{t:05d}.png")
    return root
