"""Video input: every source a user has, as a stream of RGB frames.

`open_video` accepts a video file (MP4 or any container PyAV reads), a folder of
JPEG/PNG frames, a numpy array `[T, H, W, 3]`, or any iterable of `[H, W, 3]` frames (a
camera stream). Pixel values follow one rule (`pixel_scale`): uint8 as is, other integers
within 0..255, floats in [0, 1] or [0, 255] (decided on the whole array, or on a stream's
first frame); anything else (uint16 beyond 255, NaN, negative values, bool) is an error. Frames are decoded one at a time: nothing needs the whole video in memory.
`preprocess_frame` turns a frame into the model's input exactly as sam2's `init_state`
does (PIL resize to a square, [0, 1], ImageNet mean/std).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

FRAME_EXTS = (".jpg", ".jpeg", ".png")
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


class VideoError(ValueError):
    """A video that cannot be read: missing, empty, corrupt or of the wrong layout."""


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def pixel_scale(a: np.ndarray, where: str) -> float:
    """The factor that takes `a`'s values to 0..255, by one rule (else a VideoError):

    - uint8: as it is;
    - other integers (uint16, int32, ...): values must lie in 0..255 (a 16-bit video must be
      scaled to 8 bits by its owner: the tool cannot know its white level);
    - floats: finite, either in [0, 1] (scaled by 255) or in [0, 255] (as they are);
    - bool: refused (a mask, not a video)."""
    if a.dtype == np.uint8:
        return 1.0
    if a.dtype == bool:
        raise VideoError(f"{where}: a boolean array is a mask, not a video (frames are uint8 "
                         "0..255 or floats in [0, 1])")
    if a.size == 0:
        return 1.0
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise VideoError(f"{where}: {a.dtype} pixel values in [{lo}, {hi}] are outside 0..255; "
                             "convert the video to uint8 first (e.g. (x >> 8).astype(np.uint8) "
                             "for 16-bit frames)")
        return 1.0
    if np.issubdtype(a.dtype, np.floating):
        return 255.0 / float_range(a, where, "pixel", (1.0, 255.0), VideoError)
    raise VideoError(f"{where}: unsupported pixel type {a.dtype}")


def float_range(a: np.ndarray, where: str, what: str, tops: tuple[float, ...],
                error: type[ValueError], meaning: str = "") -> float:
    """The float rule of frames and mask prompts: `a` is finite and lies in [0, top] for one
    of `tops` (tried smallest first); returns that top, else raises `error` naming `what`
    (the values' kind) and `meaning` (what they stand for)."""
    if not np.isfinite(a).all():
        raise error(f"{where}: NaN or infinite {what} values")
    lo, hi = float(a.min()), float(a.max())
    for top in sorted(tops):
        if lo >= 0 and hi <= top:
            return top
    ranges = " or in ".join(f"[0, {t:g}]" for t in sorted(tops))
    raise error(f"{where}: float {what} values in [{lo:g}, {hi:g}]; floats must lie in {ranges}"
                + (f" ({meaning})" if meaning else ""))


def _kind(a: np.ndarray) -> str:
    return "float" if np.issubdtype(a.dtype, np.floating) else "integer"


def _check_frame(frame, where: str, scale: float | None = None,
                 kind: str | None = None) -> tuple[np.ndarray, float]:
    """(RGB uint8 frame, scale used): `scale` fixed by the video's first frame or whole
    array, so that every frame of a float video is read the same way; `kind` (float or
    integer) is the first frame's: a stream may not mix them (a float frame in [0, 1] read
    at a uint8 frame's scale would be black)."""
    a = np.asarray(frame)
    if kind is not None and a.dtype != bool and _kind(a) != kind:
        raise VideoError(f"{where}: a {a.dtype} frame after {kind} frames; every frame of a "
                         "video must have one pixel type (uint8, or floats in [0, 1])")
    if a.ndim == 2:  # grayscale: replicate, as PIL's convert("RGB") does
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise VideoError(f"{where}: a frame must be [H, W, 3] RGB, got shape {list(a.shape)}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        own = pixel_scale(a, where)
        if scale is None:
            scale = own
        elif scale == 255.0 and own == 1.0:
            raise VideoError(f"{where}: float frames started in [0, 1], this frame holds values "
                             f"up to {float(a.max()):g}")
        a = np.round(a.astype(np.float32) * scale).astype(np.uint8)
    return np.ascontiguousarray(a), scale or 1.0


class VideoSource:
    """An iterable of RGB uint8 frames `[H, W, 3]` with the video's size.

    `num_frames` is None for streams whose length is unknown until they end.
    """

    def __init__(self, frames: Iterable, num_frames: int | None, name: str,
                 scale: float | None = None):
        self._frames = frames
        self.num_frames = num_frames
        self.name = name
        self._first: np.ndarray | None = None
        self._first_kind: str | None = None
        self._iter: Iterator | None = None
        self._scale = self._given_scale = scale
        # a one-shot iterator (a generator) can be read once; say so instead of yielding nothing
        self._one_shot = isinstance(frames, Iterator)
        self._consumed = False

    def _ensure_first(self) -> np.ndarray:
        if self._first is None:
            if self._one_shot and self._consumed:
                raise VideoError(f"{self.name}: this stream (a generator) was already read; "
                                 "a new tracker needs a new generator, a list or an array")
            self._consumed = True
            self._iter = iter(self._frames)
            try:
                raw = np.asarray(next(self._iter))
                self._first, self._scale = _check_frame(raw, self.name, self._given_scale)
                self._first_kind = _kind(raw)
            except StopIteration:
                raise VideoError(f"{self.name}: the video has no frames") from None
        return self._first

    @property
    def height(self) -> int:
        return self._ensure_first().shape[0]

    @property
    def width(self) -> int:
        return self._ensure_first().shape[1]

    def __iter__(self) -> Iterator[np.ndarray]:
        first = self._ensure_first()
        rest, self._iter, self._first = self._iter, None, None
        H, W = first.shape[:2]
        yield first
        for t, f in enumerate(rest, start=1):
            f, _ = _check_frame(f, f"{self.name} frame {t}", self._scale, self._first_kind)
            if f.shape[:2] != (H, W):
                raise VideoError(f"{self.name}: frame {t} is {f.shape[1]}x{f.shape[0]}, "
                                 f"frame 0 is {W}x{H}; all frames must have one size")
            yield f

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"{self.name}: a stream has no length")
        return self.num_frames


def _folder_frames(paths: list[Path]) -> Iterator[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    for p in paths:
        try:
            with Image.open(p) as img:
                if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                    # 16-bit or 32-bit grayscale: PIL's convert("RGB") clips it to white;
                    # read its values by the one pixel rule instead
                    a = np.array(img)
                    pixel_scale(a, f"frame {p} (a {img.mode} image)")
                else:
                    a = np.array(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise VideoError(f"cannot read frame {p}: {e}") from e
        yield a


def _file_frames(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot open video {path}: {e}") from e
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} holds no video stream")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise VideoError(f"{path} is corrupt: {e}") from e


def open_video(video) -> VideoSource:
    """A `VideoSource` for a path (file or frame folder), an array `[T,H,W,3]` or an iterable."""
    if isinstance(video, VideoSource):
        return video
    if isinstance(video, (str, Path)):
        path = Path(video).expanduser()
        if not path.exists():
            raise VideoError(f"video not found: {path}")
        if path.is_dir():
            return open_frames(frame_paths(path), str(path))
        n = _probe_num_frames(path)
        return VideoSource(_LazyIterable(_file_frames, path), n, str(path))
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] not in (3, 4):
            raise VideoError(f"a video array must be [T, H, W, 3], got shape {list(video.shape)}")
        if video.shape[0] == 0:
            raise VideoError("the video array has no frames")
        scale = pixel_scale(video[..., :3], "video array")  # the whole array by one rule, up front
        return VideoSource(list(video), video.shape[0], "array", scale)
    if isinstance(video, Iterable):
        return VideoSource(video, len(video) if hasattr(video, "__len__") else None, "stream")
    raise VideoError(f"unsupported video type {type(video).__name__}: pass a path, a folder, "
                     "an array [T, H, W, 3] or an iterable of frames")


def frame_paths(folder: Path) -> list[Path]:
    """The JPEG/PNG frames of a folder in natural order (frame2 before frame10)."""
    paths = sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_EXTS),
                   key=_natural_key)
    if not paths:
        raise VideoError(f"{folder} holds no {'/'.join(FRAME_EXTS)} frames")
    return paths


def open_frames(paths: list[Path], name: str) -> VideoSource:
    """A `VideoSource` decoding the given image files one at a time, in this order."""
    return VideoSource(_LazyIterable(_folder_frames, list(paths)), len(paths), name)


class _LazyIterable:
    """Re-iterable: each iteration opens the source again."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __iter__(self):
        return self.fn(self.arg)


def _probe_num_frames(path: Path) -> int | None:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path} holds no video stream")
            n = c.streams.video[0].frames
            return int(n) if n else None
    except av.FFmpegError as e:
        raise VideoError(f"cannot open video {path} (corrupt or not a video): {e}") from e


def preprocess_frame(frame: np.ndarray, image_size: int, device=None) -> torch.Tensor:
    """`[3, S, S]` float32 model input, as sam2 builds it from a frame (PIL bicubic resize)."""
    from PIL import Image

    img = np.array(Image.fromarray(frame).resize((image_size, image_size)))
    return normalize(torch.from_numpy(img).to(device).permute(2, 0, 1))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., 3, H, W] -> float32 with sam2's ImageNet mean/std."""
    x = x.float() / 255.0
    mean = torch.tensor(IMG_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMG_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def write_video(frames: Iterable[np.ndarray], path, fps: float = 10.0) -> Path:
    """Write RGB frames as an H.264 MP4 (or GIF when the suffix is .gif)."""
    import av

    from fractions import Fraction

    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(first)] + [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return path
    H, W = first.shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                         rate=Fraction(fps).limit_denominator(1001))  # 0.3 fps stays 0.3
        s.width, s.height, s.pix_fmt = W - W % 2, H - H % 2, "yuv420p"  # 4:2:0 needs even sizes
        if s.codec_context.name == "libx264":
            s.options = {"crf": "18"}  # visually lossless: overlays keep thin mask edges
        for f in itertools.chain([first], frames):  # one frame at a time: streams stay streams
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: s.height, : s.width]),
                                            format="rgb24")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
