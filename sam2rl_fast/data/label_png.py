"""Label PNGs, the annotation files of DAVIS-like datasets and the command line's --mask:
the DAVIS palette, reading (palette or grayscale, one object id per pixel, every problem
naming its file; RGB by colour where asked) and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset folder that cannot be read as any supported layout, or a bad file in it."""


def palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map (768 values): index k's colour from k's bits."""
    out = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def write_label_png(labels: np.ndarray, path: Path) -> None:
    """Save a uint8 [H, W] label image as a DAVIS palette PNG."""
    from PIL import Image

    img = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    img.putpalette(palette())
    img.save(path)


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Save a bool [H, W] mask as a grayscale 0/255 PNG (SA-V's per-object files)."""
    from PIL import Image

    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255, mode="L").save(path)


_MODES = ("P", "L", "1")
_COLOUR_MODES = ("RGB", "RGBA")


def _mode_error(path, mode: str, colours: bool) -> DatasetError:
    also = ", or RGB with one flat colour per object" if colours else ""
    return DatasetError(f"{path}: a {mode} image, not a palette or label PNG (annotations hold one "
                        "object id per pixel: 8-bit palette or grayscale, 0 background, 255 "
                        f"void{also})")


def read_label_png(path: Path, size: tuple[int, int] | None = None, *,
                   colours: bool = False) -> np.ndarray:
    """uint8 [H, W] label image of a palette (P) or grayscale (L, 1) PNG; anything else is an error.

    `size` (H, W) is the frame size the annotation must have. `colours`: an RGB(A) image
    is read too (a mask drawn in an image editor: `colour_labels`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in _MODES + (_COLOUR_MODES if colours else ()):
                raise _mode_error(path, mode, colours)
            labels = np.array(img.convert("L") if mode == "1" else img)
    except (UnidentifiedImageError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot read the annotation, the file is not an image "
                           f"PNG/JPEG ({e})") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the annotation ({e})") from e
    if colours and labels.ndim == 3:
        labels = colour_labels(labels, path)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DatasetError(f"{path}: an annotation must be an 8-bit single-channel image, "
                           f"got {labels.dtype} {list(labels.shape)}")
    if size is not None and labels.shape != tuple(size):
        raise DatasetError(f"{path}: the annotation is {labels.shape[1]}x{labels.shape[0]}, "
                           f"its frame is {size[1]}x{size[0]}")
    return labels


def colour_labels(rgb: np.ndarray, path="image") -> np.ndarray:
    """uint8 [H, W] labels of an RGB(A) image [H, W, 3|4] (alpha ignored): grey stored as
    RGB is its grey value; else one label per colour, black the background, DAVIS palette
    colours in palette order (as a palette PNG of them reads), other colours after them."""
    rgb = np.asarray(rgb)[..., :3]
    if (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    found, inv = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    if len(found) > 255:
        raise DatasetError(f"{path}: {len(found)} colours (a photo, or a JPEG-compressed mask?); "
                           "give one flat colour per object, or an indexed PNG")
    pal = palette()
    rank = {tuple(pal[3 * k: 3 * k + 3]): k for k in range(256)}
    order = sorted(range(len(found)), key=lambda i: (rank.get(tuple(found[i]), 256), tuple(found[i])))
    ids = np.zeros(len(found), np.uint8)
    k = 0
    for i in order:
        if tuple(found[i]) != (0, 0, 0):
            k += 1
            ids[i] = k
    return ids[inv.reshape(-1)].reshape(rgb.shape[:2])


def check_annotation_header(path: Path, size: tuple[int, int] | None = None) -> None:
    """The checks of `read_label_png` that need only the file's header (mode and size), so
    that a dataset's bad annotation is named when it is opened, before any tracking."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode, w, h = img.mode, img.width, img.height
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot read the annotation ({e})") from e
    if mode not in _MODES:
        raise _mode_error(path, mode, colours=False)
    if size is not None and (h, w) != tuple(size):
        raise DatasetError(f"{path}: the annotation is {w}x{h}, its frame is {size[1]}x{size[0]}")
