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

from sam2rl_fast.data.objects import (
    SHAPES,  # noqa: F401  (re-exported: the shapes the suites draw)
    Look,
    Track,
    crossing_track,
    drifted,
    lookalike,
    random_look,
    render_object,
    simulate,
)
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


# ------------------------------------------------------------------ one video
@dataclass
class _Scene:
    """Everything random about a video, drawn before any frame is rendered (in this order:
    the rng's draws decide the video, so reordering them changes every video)."""

    spec: SuiteSpec
    seed: int
    T: int
    H: int
    W: int
    bg_kind: str
    bg: np.ndarray  # [H, W, 3] float32
    looks: list[Look]  # per target
    ends: list[Look | None]  # per target: where its drift ends (None: no drift)
    jump_frames: set[int]
    leave: tuple[int, int] | None  # (start, length) of the first target's exit from the view
    targets: list[Track]
    d_looks: list[Look]  # per distractor
    d_tracks: list[Track]
    d_above: list[bool]  # drawn above (else below) the targets
    occl_plan: list[tuple[int, int]]  # (start, length) per occluder
    occl_tex: list[np.ndarray]  # [H, W, 3] per occluder


def _span(rng, lo_hi: tuple[int, int], lo_start: int, T: int) -> tuple[int, int]:
    """(start, length) of an interval that ends before the video does."""
    lo, hi = lo_hi
    length = int(rng.integers(lo, hi + 1))
    length = max(1, min(length, T - lo_start - 2))
    start = int(rng.integers(lo_start, max(lo_start + 1, T - length - 1)))
    return start, length


def _distractors(rng, spec: SuiteSpec, looks, targets, T, H, W):
    """(looks, tracks, above) of the look-alikes: distractor i copies target i's look (mod
    the targets) and, in crossing suites, crosses that target's path."""
    d_looks, d_tracks, d_above = [], [], []
    for i in range(spec.num_distractors):
        like = looks[i % len(looks)]
        d_looks.append(lookalike(rng, like, spec.lookalike_exact))
        if spec.crossing:
            d_tracks.append(crossing_track(rng, targets[i % len(targets)], T, H, W, spec.speed))
        else:
            d_tracks.append(simulate(rng, T, H, W, spec.speed, spec.transform))
        d_above.append(bool(rng.random() < 0.5))
    return d_looks, d_tracks, d_above


def _draw_scene(spec: SuiteSpec, suite: str, seed: int, T: int, H: int, W: int) -> _Scene:
    """Scene setup, then the targets' and distractors' trajectories, then the occlusion
    schedule: every random draw of the video."""
    rng = np.random.default_rng([zlib.crc32(suite.encode()), seed])
    bg_kind, bg = random_texture(rng, H, W)
    looks = [random_look(rng, H, W) for _ in range(spec.num_targets)]
    ends = [drifted(rng, lk, H, W) if spec.drift > 0 else None for lk in looks]
    jump_frames = set(rng.choice(np.arange(2, T), size=min(spec.jumps, T - 2), replace=False).tolist())
    leave = _span(rng, spec.exit_frames, max(1, T // 4), T) if spec.leave_view else None
    targets = [simulate(rng, T, H, W, spec.speed, spec.transform,
                         jump_frames if k == 0 else (), leave if k == 0 else None)
               for k in range(spec.num_targets)]
    d_looks, d_tracks, d_above = _distractors(rng, spec, looks, targets, T, H, W)
    # Occluders cross the first target's path: each hides it completely for its span (a
    # static textured wall over everything the target covers meanwhile, plus a margin).
    occl_plan = [_span(rng, spec.occlusion_frames, max(1, T // 4), T) for _ in range(spec.num_occluders)]
    occl_tex = [random_texture(rng, H, W)[1] for _ in occl_plan]
    return _Scene(spec, seed, T, H, W, bg_kind, bg, looks, ends, jump_frames, leave, targets,
                  d_looks, d_tracks, d_above, occl_plan, occl_tex)


def _drift_alpha(sc: _Scene, t: int) -> float:
    """How far the targets' looks have drifted at frame t (0 at the first frame)."""
    return sc.spec.drift * t / max(sc.T - 1, 1)


def _layers(sc: _Scene, t: int, scale: float, rendered: list[list], distractor_pixels) -> list:
    """[(target index or None, render)] of frame t in z-order (later over earlier); records
    each target's render in `rendered[k][t]` and each distractor's area."""
    alpha = _drift_alpha(sc, t)
    layers = []
    for k, tr in enumerate(sc.targets):
        r = None
        if tr.visible[t]:
            r = render_object(sc.looks[k], sc.ends[k], alpha, *tr.pos[t], tr.angle[t], scale, sc.H, sc.W)
        rendered[k][t] = r
        layers.append((k, r))
    for i, tr in enumerate(sc.d_tracks):
        r = render_object(sc.d_looks[i], None, 0.0, *tr.pos[t], tr.angle[t], scale, sc.H, sc.W)
        if r is not None:
            distractor_pixels[t, i] = int(r[2].sum())
        # above or below the target it copies
        if sc.d_above[i]:
            layers.append((None, r))
        else:
            layers.insert(0, (None, r))
    return layers


def _composite(img: np.ndarray, masks: np.ndarray, layers: list) -> None:
    """Draw `layers` onto `img` [H, W, 3]; `masks` [n_obj, H, W] keep each target's visible part."""
    full = np.zeros(img.shape[:2], bool)
    for k, r in layers:
        if r is None:
            continue
        y0, x0, m, colour = r
        h, w = m.shape
        full[:] = False
        full[y0:y0 + h, x0:x0 + w] = m
        img[y0:y0 + h, x0:x0 + w][m] = colour[m]
        masks[:, full] = False
        if k is not None:
            masks[k] |= full


def _occluder_box(sc: _Scene, start: int, dur: int, t: int, rendered: list):
    """(y0, y1, x0, x1) of the wall over everything the first target covers during the
    occlusion (frames not rendered yet at their largest scale), empty when it covers nothing."""
    H, W = sc.H, sc.W
    y0, y1, x0, x1 = H, 0, W, 0
    tgt = sc.targets[0]
    for tt in range(start, start + dur):
        r = rendered[tt] if tt <= t else render_object(
            sc.looks[0], sc.ends[0], _drift_alpha(sc, tt), *tgt.pos[tt], tgt.angle[tt],
            1.0 + sc.spec.transform * 0.25, H, W)
        if r is not None and r[2].any():
            ys, xs = np.nonzero(r[2])
            y0, y1 = min(y0, r[0] + ys.min()), max(y1, r[0] + ys.max() + 1)
            x0, x1 = min(x0, r[1] + xs.min()), max(x1, r[1] + xs.max() + 1)
    return y0, y1, x0, x1


def _occlude(sc: _Scene, t: int, img: np.ndarray, masks: np.ndarray, rendered: list,
             out_of_view: np.ndarray, occluded: np.ndarray) -> None:
    """Draw the occluders active at frame t over `img`, clearing what they hide from `masks`
    [n_obj, H, W]; flags the first target occluded (`occluded` [n_obj]) when in view."""
    for (start, dur), tex in zip(sc.occl_plan, sc.occl_tex):
        if not start <= t < start + dur:
            continue
        y0, y1, x0, x1 = _occluder_box(sc, start, dur, t, rendered)
        if y0 < y1:
            y0, y1 = max(0, y0 - 4), min(sc.H, y1 + 4)
            x0, x1 = max(0, x0 - 4), min(sc.W, x1 + 4)
            img[y0:y1, x0:x1] = tex[y0:y1, x0:x1]
            masks[:, y0:y1, x0:x1] = False
            occluded[0] = not out_of_view[0]


def _render_video(sc: _Scene, suite: str) -> SyntheticVideo:
    """Every frame of the scene: objects in z-order, then occluders, then the lighting gain."""
    spec, T, H, W, seed = sc.spec, sc.T, sc.H, sc.W, sc.seed
    n = spec.num_targets
    frames = np.zeros((T, H, W, 3), np.uint8)
    masks = np.zeros((T, n, H, W), bool)
    occluded = np.zeros((T, n), bool)
    out_of_view = np.zeros((T, n), bool)
    distractor_pixels = np.zeros((T, spec.num_distractors), np.int64)
    rendered = [[None] * T for _ in sc.targets]
    for t in range(T):
        gain = 1.0 + spec.transform * 0.3 * np.sin(2 * np.pi * t / T + seed)
        scale = 1.0 + spec.transform * 0.25 * np.sin(2 * np.pi * t / T * 1.3 + seed)
        img = sc.bg.copy()
        _composite(img, masks[t], _layers(sc, t, scale, rendered, distractor_pixels))
        for k in range(n):
            if rendered[k][t] is None or not rendered[k][t][2].any():
                out_of_view[t, k] = True
        _occlude(sc, t, img, masks[t], rendered[0], out_of_view[t], occluded[t])
        frames[t] = np.clip(img * gain, 0, 255).astype(np.uint8)
    return SyntheticVideo(suite, seed, frames, masks, occluded, out_of_view,
                          info={"jump_frames": sorted(sc.jump_frames), "spec": spec,
                                "background": sc.bg_kind,
                                "target_shapes": [lk.shape for lk in sc.looks],
                                "distractor_shapes": [lk.shape for lk in sc.d_looks],
                                "distractor_pixels": distractor_pixels,
                                "occlusions": sc.occl_plan, "exit": sc.leave})


def generate_video(suite: str, seed: int, num_frames: int = 24, height: int = 128,
                   width: int = 128) -> SyntheticVideo:
    """Render one video of `suite` from `seed` (deterministic)."""
    spec = _spec(suite)
    if num_frames < 2 or height < 32 or width < 32:
        raise ValueError("need num_frames >= 2 and frames of at least 32x32 pixels")
    return _render_video(_draw_scene(spec, suite, seed, num_frames, height, width), suite)


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
