"""Users' annotated videos: the folder layouts of DAVIS 2017, MOSE, YouTube-VOS, LVOS and SA-V.

DAVIS-like (DAVIS, MOSE, YouTube-VOS, LVOS)::

    ROOT/JPEGImages/[480p/]<video>/<frame>.jpg
    ROOT/Annotations/[480p/]<video>/<frame>.png   palette or label PNG: 0 background,
                                                  k object k, 255 void (read as
                                                  background, as the DAVIS toolkit's
                                                  semi-supervised scoring does)
    ROOT/ImageSets/<year>/<split>.txt             one video name per line (optional)

SA-V::

    ROOT/JPEGImages_24fps/<video>/<frame>.jpg
    ROOT/Annotations_6fps/<video>/<obj_id>/<frame>.png   one folder per object, binary PNGs
    ROOT/sav_<split>.txt                                 (optional)

An annotation belongs to the frame of the same file stem; frames without one are tracked
but not scored (YouTube-VOS annotates every 5th frame, SA-V every 4th). A ROOT holding
`<split>/JPEGImages` (YouTube-VOS's and MOSE's `train/`, `valid/`) is read at `ROOT/<split>`.
Everything is checked when the dataset is opened, and every problem names its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2rl_fast.data.label_png import (  # noqa: F401 - DatasetError is this module's error too
    DatasetError,
    check_annotation_header,
    read_label_png,
)
from sam2rl_fast.tracking.video import VideoSource, frame_paths, open_frames

VOID = 255
LAYOUTS = {"davis": ("JPEGImages", "Annotations"), "sav": ("JPEGImages_24fps", "Annotations_6fps")}


def check_video_name(name: str, where) -> str:
    """A video name is one folder name: not a path (absolute, with a separator, `..`), so
    that reading and writing `<folder>/<video>` never leaves the dataset or the output."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or Path(name).is_absolute() or name != name.strip())
    if bad:
        raise DatasetError(f"{where}: {name!r} is not a video name (a video is named by its "
                           "folder's name, not a path)")
    return name


def _no_duplicates(names: list[str], where) -> None:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    if dup:
        raise DatasetError(f"{where} names {dup} more than once (each video would be scored "
                           "twice); list each video once")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot read frame {path}: {e}") from e


@dataclass
class GroundTruth:
    """A video's annotations: ``masks[f]`` [K, H, W] bool for every annotated frame f, ``void[f]``
    [H, W] bool (DAVIS' 255) or None; ``obj_ids`` the K objects in id order."""

    obj_ids: list[int]
    masks: dict[int, np.ndarray]
    void: dict[int, np.ndarray | None]

    def first_frames(self) -> dict[int, int]:
        """{obj_id: the first annotated frame where it is visible} (objects never visible left out)."""
        out = {}
        for f in sorted(self.masks):
            for k, o in enumerate(self.obj_ids):
                if o not in out and self.masks[f][k].any():
                    out[o] = f
        return out

    def prompt(self) -> dict[int, dict[int, np.ndarray]]:
        """Semi-supervised prompts: {frame: {obj_id: mask}}, each object on its first annotation."""
        out: dict[int, dict[int, np.ndarray]] = {}
        for o, f in self.first_frames().items():
            out.setdefault(f, {})[o] = self.masks[f][self.obj_ids.index(o)]
        return dict(sorted(out.items()))


@dataclass
class DatasetVideo:
    """One video of a dataset: its frames and where its annotations are."""

    name: str
    frames: list[Path]
    layout: str
    # davis: {frame index: label PNG}; sav: {frame index: {obj_id: binary PNG}}
    annotations: dict = field(repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frames]

    def open(self) -> VideoSource:
        """The frames as a stream for `FastTracker` (decoded one at a time)."""
        return open_frames(self.frames, self.name)

    def read_frames(self) -> np.ndarray:
        """Every frame [T, H, W, 3] uint8 (in memory)."""
        return np.stack(list(self.open()))

    def ground_truth(self) -> GroundTruth:
        size = _image_size(self.frames[0])
        if self.layout == "sav":
            obj_ids = sorted({o for per in self.annotations.values() for o in per})
            masks, void = {}, {}
            for f, per in sorted(self.annotations.items()):
                m = np.zeros((len(obj_ids), *size), bool)
                for k, o in enumerate(obj_ids):
                    if o in per:
                        m[k] = read_label_png(per[o], size) > 0
                masks[f], void[f] = m, None
            return GroundTruth(obj_ids, masks, void)
        labels = {f: read_label_png(p, size) for f, p in sorted(self.annotations.items())}
        ids = set()
        for lab in labels.values():
            ids.update(int(v) for v in np.unique(lab))
        obj_ids = sorted(ids - {0, VOID})
        masks = {f: lab[None] == np.array(obj_ids, np.uint8).reshape(-1, 1, 1)
                 for f, lab in labels.items()}
        void = {f: (lab == VOID) if (lab == VOID).any() else None for f, lab in labels.items()}
        return GroundTruth(obj_ids, masks, void)


@dataclass
class Dataset:
    root: Path
    layout: str  # "davis" | "sav"
    split: str | None
    videos: list[DatasetVideo]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> DatasetVideo:
        return self.videos[i]


def _find_layout(root: Path, split: str | None) -> tuple[Path, str]:
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    candidates = [root] + ([root / split] if split else [])
    for base in candidates:
        for layout, (img, ann) in LAYOUTS.items():
            if (base / img).is_dir() and (base / ann).is_dir():
                return base, layout
    for layout, (img, ann) in LAYOUTS.items():
        for base in candidates:
            if (base / img).is_dir() != (base / ann).is_dir():
                have, miss = (img, ann) if (base / img).is_dir() else (ann, img)
                raise DatasetError(f"{base}: has {have}/ but no {miss}/ beside it")
    raise DatasetError(
        f"{root} matches no dataset layout: expected JPEGImages/ and Annotations/ (DAVIS, MOSE, "
        "YouTube-VOS, LVOS) or JPEGImages_24fps/ and Annotations_6fps/ (SA-V)")


def _resolution_dirs(base: Path, layout: str, resolution: str | None) -> tuple[Path, Path]:
    img, ann = (base / d for d in LAYOUTS[layout])
    if resolution is not None:
        img, ann = img / resolution, ann / resolution
        for d in (img, ann):
            if not d.is_dir():
                raise DatasetError(f"--resolution {resolution}: {d} does not exist")
    elif layout == "davis" and (img / "480p").is_dir() and (ann / "480p").is_dir():
        img, ann = img / "480p", ann / "480p"  # DAVIS: the 480p frames, as its benchmark
    return img, ann


def _split_file(base: Path, layout: str, split: str) -> Path:
    if layout == "sav":
        tried = [base / f"sav_{split}.txt", base / f"{split}.txt"]
    else:
        sets = base / "ImageSets"
        years = sorted((d for d in sets.iterdir() if d.is_dir()), key=lambda d: d.name,
                       reverse=True) if sets.is_dir() else []
        tried = [d / f"{split}.txt" for d in years] + [sets / f"{split}.txt"]
    for p in tried:
        if p.is_file():
            return p
    looked = ", ".join(str(p.relative_to(base)) for p in tried) or f"ImageSets/<year>/{split}.txt"
    raise DatasetError(f"--split {split}: no split file in {base} (looked for {looked})")


def open_dataset(root, split: str | None = None, sequences=None,
                 resolution: str | None = None) -> Dataset:
    """Read and check a dataset folder.

    Args:
        root: the dataset folder (layouts in the module docstring).
        split: a split file's name (`val` reads `ImageSets/<year>/val.txt`, the latest year
            holding it; SA-V: `sav_val.txt`). None: every video with annotations.
        sequences: names of videos to keep (in this order), or None for all of the split.
        resolution: DAVIS' `480p` (default when present) or `Full-Resolution`.
    """
    root = Path(root).expanduser()
    base, layout = _find_layout(root, split)
    img_dir, ann_dir = _resolution_dirs(base, layout, resolution)
    split_path = None
    if split is not None and base == root:
        split_path = _split_file(base, layout, split)
        try:
            text = split_path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{split_path}: cannot read the split file ({e})") from None
        names = [check_video_name(ln.strip(), split_path) for ln in text.splitlines() if ln.strip()]
        if not names:
            raise DatasetError(f"{split_path} names no video")
        _no_duplicates(names, split_path)
    else:  # every video with annotations
        names = sorted(d.name for d in ann_dir.iterdir() if d.is_dir())
    if sequences is not None:
        seqs = [s.strip() for s in (sequences.split(",") if isinstance(sequences, str) else sequences)
                if s.strip()]
        for s_ in seqs:
            check_video_name(s_, "--sequences")
        _no_duplicates(seqs, "--sequences")
        unknown = [s for s in seqs if s not in names]
        if unknown:
            where = split_path or ann_dir
            raise DatasetError(f"--sequences: {unknown} not in {where} (it has {len(names)} "
                               f"video(s), e.g. {names[:5]})")
        names = seqs
    if not names:
        raise DatasetError(f"{ann_dir} holds no annotated video")
    videos = [_read_video(name, img_dir, ann_dir, layout, split_path) for name in names]
    return Dataset(base, layout, split, videos)


def _read_video(name: str, img_dir: Path, ann_dir: Path, layout: str,
                split_path: Path | None) -> DatasetVideo:
    fdir, adir = img_dir / name, ann_dir / name
    if not fdir.is_dir():
        named = f"{split_path} names video {name!r}, but " if split_path else ""
        raise DatasetError(f"{named}{fdir} does not exist")
    try:
        frames = frame_paths(fdir)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    index = {p.stem: i for i, p in enumerate(frames)}
    if not adir.is_dir():
        raise DatasetError(f"video {name!r} has no annotations: {adir} does not exist")

    def index_of(png: Path) -> int:
        if png.stem not in index:
            raise DatasetError(
                f"{png}: no frame {png.stem} in {fdir} (frames and annotations disagree: "
                f"{len(frames)} frames, first {frames[0].name}, last {frames[-1].name})")
        return index[png.stem]

    size = _image_size(frames[0])

    def frame_of(png: Path) -> int:  # noqa: F811 - the index above, and the header checked
        f = index_of(png)
        check_annotation_header(png, size)
        return f

    if layout == "sav":
        objs = sorted((d for d in adir.iterdir() if d.is_dir()), key=lambda d: d.name)
        ann: dict[int, dict[int, Path]] = {}
        for d in objs:
            if not d.name.isdigit():
                raise DatasetError(f"{d}: SA-V object folders are numbered (000, 001, ...)")
            for png in sorted(d.glob("*.png")):
                ann.setdefault(frame_of(png), {})[int(d.name)] = png
        ann = dict(sorted(ann.items()))
    else:
        ann = {frame_of(p): p for p in sorted(adir.glob("*.png"))}
        ann = dict(sorted(ann.items()))
    if not ann:
        raise DatasetError(f"video {name!r} has no annotations: {adir} holds no PNG")
    return DatasetVideo(name, frames, layout, ann)


def check_fully_annotated(dataset: Dataset) -> None:
    """Training rewards every frame's IoU: refuse a dataset with a frame not annotated."""
    for v in dataset.videos:
        if len(v.annotations) != v.num_frames:
            raise DatasetError(
                f"video {v.name!r}: {len(v.annotations)} of {v.num_frames} frames are annotated; "
                "training rewards every frame's IoU, so it needs every frame annotated "
                "(DAVIS, MOSE, LVOS are; YouTube-VOS and SA-V are not: evaluate those with "
                "`sam2rl-fast eval --dataset`)")


def training_items(dataset: Dataset, max_frames: int | None = None) -> list[tuple]:
    """(frames [T, H, W, 3], masks [T, K, H, W], name) per video for memory-control training,
    whose reward is every frame's IoU: videos must be annotated on every frame. Objects
    that appear later form their own item from their first frame on (`<video>@<frame>`),
    so that every episode starts where its objects are prompted; `max_frames` cuts each."""
    items = []
    check_fully_annotated(dataset)
    for v in dataset.videos:
        gt = v.ground_truth()
        frames = v.read_frames()
        masks = np.stack([gt.masks[f] for f in range(v.num_frames)])  # [T, K, H, W]
        starts: dict[int, list[int]] = {}
        for o, f in gt.first_frames().items():
            starts.setdefault(f, []).append(gt.obj_ids.index(o))
        for f, ks in sorted(starts.items()):
            end = v.num_frames if max_frames is None else min(v.num_frames, f + max_frames)
            if end - f < 2:
                continue  # an object on the last frame only: nothing to track
            items.append((frames[f:end], masks[f:end][:, ks], v.name if f == 0 else f"{v.name}@{f}"))
    if not items:
        raise DatasetError(f"{dataset.root}: no video has an object to track for two frames or more")
    return items
