"""Deterministic synthetic videos with ground-truth masks, built for memory control.

Each video has textured procedural backgrounds and textured target objects of varied
shape; depending on its suite, also look-alike **distractors**, **occluders** that hide a
target completely for several frames, targets that **leave and re-enter** the view,
**fast abrupt motion**, and scale / rotation / lighting change. Ground truth is the
*visible* part of each target: a fully occluded or out-of-view target has an empty mask.

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


@dataclass(frozen=True)
class SuiteSpec:
    num_targets: int = 1
    num_distractors: int = 0
    num_occluders: int = 0
    leave_view: bool = False
    jumps: int = 0  # abrupt displacements of the target
    speed: float = 1.5  # pixels per frame (at 128 px)
    transform: float = 0.0  # amount of scale / rotation / lighting change


SUITES: dict[str, SuiteSpec] = {
    "easy": SuiteSpec(speed=1.5, transform=0.3),
    "occlusion": SuiteSpec(num_occluders=1, speed=1.5, transform=0.3),
    "distractor": SuiteSpec(num_distractors=2, speed=2.0, transform=0.3),
    "fast-motion": SuiteSpec(jumps=3, speed=4.0, transform=0.5),
    "mixed": SuiteSpec(num_targets=2, num_distractors=1, num_occluders=1, leave_view=True,
                       jumps=1, speed=2.5, transform=0.6),
}
_SPLITS = {"train": (0, 100_000), "heldout": (1_000_000, 1_000_100)}
SHAPES = ("ellipse", "rectangle", "diamond", "star")


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


def _background(rng, H, W) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    for _ in range(4):  # a few oriented gratings in random colours
        f = rng.uniform(0.02, 0.15)
        a = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.5 * np.sin(f * (xx * np.cos(a) + yy * np.sin(a)) + phase)
        img += wave[..., None] * rng.uniform(0, 80, 3)
    img += rng.normal(0, 12, (H, W, 3))
    return img


def _shape_mask(shape, cx, cy, a, b, angle, H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    if shape == "ellipse":
        m = (u / a) ** 2 + (v / b) ** 2 <= 1
    elif shape == "rectangle":
        m = (np.abs(u) <= a) & (np.abs(v) <= b)
    elif shape == "diamond":
        m = np.abs(u) / a + np.abs(v) / b <= 1
    else:  # star: radius modulated by 5 lobes
        r = np.hypot(u / a, v / b)
        m = r <= 0.75 + 0.25 * np.cos(5 * np.arctan2(v, u))
    return m, u


@dataclass
class _Thing:
    shape: str
    size: tuple[float, float]
    colors: np.ndarray  # [2, 3] stripe colours
    freq: float
    pos: np.ndarray
    vel: np.ndarray
    angle: float
    spin: float


def _make_thing(rng, H, W, speed, like: _Thing | None = None) -> _Thing:
    s = min(H, W)
    if like is None:  # a new appearance
        shape = SHAPES[rng.integers(len(SHAPES))]
        size = (rng.uniform(0.08, 0.14) * s, rng.uniform(0.06, 0.12) * s)
        colors = rng.uniform(30, 255, (2, 3))
        freq = rng.uniform(0.3, 0.9)
    else:  # a look-alike: same shape and texture, slightly different colour
        shape, size, freq = like.shape, like.size, like.freq
        colors = np.clip(like.colors + rng.normal(0, 12, (2, 3)), 0, 255)
    pos = rng.uniform([0.25 * W, 0.25 * H], [0.75 * W, 0.75 * H])
    ang = rng.uniform(0, 2 * np.pi)
    vel = speed * (min(H, W) / 128) * np.array([np.cos(ang), np.sin(ang)])
    return _Thing(shape, size, colors, freq, pos, vel, rng.uniform(0, np.pi), rng.normal(0, 0.03))


def generate_video(suite: str, seed: int, num_frames: int = 24, height: int = 128,
                   width: int = 128) -> SyntheticVideo:
    """Render one video of `suite` from `seed` (deterministic)."""
    spec = _spec(suite)
    if num_frames < 2 or height < 32 or width < 32:
        raise ValueError("need num_frames >= 2 and frames of at least 32x32 pixels")
    rng = np.random.default_rng([zlib.crc32(suite.encode()), seed])
    T, H, W = num_frames, height, width
    bg = _background(rng, H, W)
    targets = [_make_thing(rng, H, W, spec.speed) for _ in range(spec.num_targets)]
    distractors = [_make_thing(rng, H, W, spec.speed, like=targets[i % len(targets)])
                   for i in range(spec.num_distractors)]
    # Occluders cross the first target's path: each covers it completely for a few frames.
    occl_plan = []
    for i in range(spec.num_occluders):
        start = int(rng.integers(T // 4, max(T // 4 + 1, T - T // 3)))
        occl_plan.append((start, int(rng.integers(3, 6)), 0))
    jump_frames = set(rng.choice(np.arange(2, T), size=min(spec.jumps, T - 2), replace=False).tolist())
    leave = (int(rng.integers(T // 4, T // 2)), int(rng.integers(4, 7))) if spec.leave_view else None

    frames = np.zeros((T, H, W, 3), np.uint8)
    masks = np.zeros((T, spec.num_targets, H, W), bool)
    occluded = np.zeros((T, spec.num_targets), bool)
    out_of_view = np.zeros((T, spec.num_targets), bool)
    distractor_pixels = np.zeros((T, spec.num_distractors), np.int64)
    for t in range(T):
        gain = 1.0 + spec.transform * 0.3 * np.sin(2 * np.pi * t / T + seed)
        scale = 1.0 + spec.transform * 0.25 * np.sin(2 * np.pi * t / T * 1.3 + seed)
        img = bg.copy()
        layers = []  # (is_target_index or None, mask, colour image)
        for k, th in enumerate(targets + distractors):
            if t > 0:
                th.pos = th.pos + th.vel
                th.angle += th.spin + spec.transform * 0.02
                if k == 0 and t in jump_frames:  # abrupt motion
                    th.pos = th.pos + rng.uniform(-0.3, 0.3, 2) * np.array([W, H])
                # bounce inside the frame, except the target while it is leaving the view
                leaving = leave is not None and k == 0 and leave[0] <= t < leave[0] + leave[1]
                if not leaving:  # bounce off the borders
                    for d, lim in ((0, W), (1, H)):
                        if (th.pos[d] < 0.1 * lim and th.vel[d] < 0) or (
                                th.pos[d] > 0.9 * lim and th.vel[d] > 0):
                            th.vel[d] = -th.vel[d]
                        th.pos[d] = float(np.clip(th.pos[d], 0.05 * lim, 0.95 * lim))
            pos = th.pos
            if leave is not None and k == 0 and leave[0] <= t < leave[0] + leave[1]:
                pos = np.array([-2.0 * max(th.size), pos[1]])  # off screen
            m, u = _shape_mask(th.shape, pos[0], pos[1], th.size[0] * scale, th.size[1] * scale,
                               th.angle, H, W)
            stripe = (np.sin(th.freq * u) > 0)[..., None]
            colour = np.where(stripe, th.colors[0], th.colors[1])
            layers.append((k if k < len(targets) else None, m, colour))
            if k >= len(targets):
                distractor_pixels[t, k - len(targets)] = int(m.sum())
            if k < len(targets) and not m.any():
                out_of_view[t, k] = True
        # z-order: later things are drawn over earlier ones
        for k, m, colour in layers:
            img[m] = colour[m]
            for j in range(spec.num_targets):
                if k != j:
                    masks[t, j] &= ~m
            if k is not None:
                masks[t, k] |= m
        for start, dur, which in occl_plan:
            if start <= t < start + dur:
                # a textured slab over the whole target (and some margin)
                ys, xs = np.nonzero(layers[which][1])
                if len(ys):
                    y0, y1 = max(0, ys.min() - 4), min(H, ys.max() + 5)
                    x0, x1 = max(0, xs.min() - 4), min(W, xs.max() + 5)
                    img[y0:y1, x0:x1] = bg[y0:y1, x0:x1][::-1] * 0.6 + 60
                    masks[t, :, y0:y1, x0:x1] = False
                    occluded[t, which] = True
        frames[t] = np.clip(img * gain, 0, 255).astype(np.uint8)
    return SyntheticVideo(suite, seed, frames, masks, occluded, out_of_view,
                          info={"jump_frames": sorted(jump_frames), "spec": spec,
                                "target_shapes": [th.shape for th in targets],
                                "distractor_shapes": [th.shape for th in distractors],
                                "distractor_pixels": distractor_pixels})


def write_davis(video: SyntheticVideo, root: str | Path, overwrite: bool = False) -> Path:
    """Write `root/JPEGImages/<name>/%05d.jpg` and `root/Annotations/<name>/%05d.png`
    (palette PNG, 0 = background, k + 1 = object k) as DAVIS lays them out."""
    from PIL import Image

    root = Path(root)
    img_dir, ann_dir = root / "JPEGImages" / video.name, root / "Annotations" / video.name
    for d in (img_dir, ann_dir):
        if d.exists() and any(d.iterdir()) and not overwrite:
            raise FileExistsError(f"{d} is not empty; pass overwrite=True to replace it")
        d.mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0] + [c for k in range(255) for c in
                           ((k * 97 + 64) % 256, (k * 57 + 128) % 256, (k * 151 + 32) % 256)]
    for t in range(video.frames.shape[0]):
        Image.fromarray(video.frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
        label = np.zeros(video.masks.shape[2:], np.uint8)
        for k in range(video.masks.shape[1]):
            label[video.masks[t, k]] = k + 1
        png = Image.fromarray(label, mode="P")
        png.putpalette(palette)
        png.save(ann_dir / f"{t:05d}.png")
    return root
