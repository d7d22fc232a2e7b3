"""Backbone features computed once per video and reused by every episode.

The image encoder does not depend on memory decisions, and it is most of a frame's cost
at 256 px, so the environment never runs it while stepping: `compute_features` encodes
a video's frames once (with a progress bar) and `FeatureCache` keeps the result in
memory and, when given a folder, on disk keyed by the model's weights and the video.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sam2rl_fast.model.cached_encodings import cached_encodings
from sam2rl_fast.tracking.step import Features, TrackingStep
from sam2rl_fast.tracking.video import open_video


@dataclass
class VideoFeatures:
    """A video's backbone features, all frames.

    vf: per level [HW_l, T, C_l] (frames on the batch axis sam2 uses, so a gather of
    lanes is one contiguous index_select); vp: per level [HW_l, 1, C_l] (position encodings depend
    on the grid only, so one copy serves every frame); sizes: per level (h, w).
    """

    vf: list[torch.Tensor]
    vp: list[torch.Tensor]
    sizes: list[tuple[int, int]]

    @property
    def num_frames(self) -> int:
        return self.vf[0].shape[1]

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.vf + self.vp)

    def frames(self, idx) -> Features:
        """Features of frames `idx` (one per lane) in the layout `TrackingStep` takes."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        vf = [x.index_select(1, idx.to(x.device)) for x in self.vf]
        vp = [x.expand(-1, len(idx), -1) for x in self.vp]
        return vf, vp, self.sizes


def stack_lanes(parts: list[Features]) -> Features:
    """Concatenate per-lane features (lanes of different videos) along the batch axis."""
    if len(parts) == 1:
        return parts[0]
    vf = [torch.cat(level, dim=1) for level in zip(*(p[0] for p in parts))]
    vp = [torch.cat(level, dim=1) for level in zip(*(p[1] for p in parts))]
    return vf, vp, parts[0][2]


@torch.inference_mode()
def compute_features(video, model, *, progress: bool = True, desc: str = "caching features") -> VideoFeatures:
    """Run the image encoder on every frame of `video` (anything `open_video` takes)."""
    src = open_video(video)
    step = TrackingStep(model, memory_attention=None)
    vf_frames, vp, sizes = [], None, None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=src.num_frames, desc=desc, unit="frame", leave=False)
    with cached_encodings(model):  # the positional encodings once per video, as the tracker
        for frame in src:
            vf, vp_f, sizes = step.encode_image(frame)
            vf_frames.append([x[:, 0] for x in vf])
            vp = vp if vp is not None else [x.clone() for x in vp_f]
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return VideoFeatures([torch.stack(level, dim=1) for level in zip(*vf_frames)], vp,
                         [tuple(s) for s in sizes])


def model_fingerprint(model) -> str:
    """A short hash of the image encoder's weights and input size (what the features depend on)."""
    h = hashlib.sha1(str(model.image_size).encode())
    for name, t in sorted(model.image_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def video_fingerprint(frames: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frames).tobytes()).hexdigest()[:16]


class FeatureCache:
    """Backbone features per video, computed on first use; on disk too when `folder` is set."""

    def __init__(self, model, folder: str | Path | None = None, progress: bool = True):
        self.model, self.progress = model, progress
        self.folder = Path(folder) if folder is not None else None
        self._mem: dict[str, VideoFeatures] = {}
        self._model_key: str | None = None

    def get(self, frames: np.ndarray, name: str = "video") -> VideoFeatures:
        """Features of `frames` [T, H, W, 3] uint8."""
        if self._model_key is None:
            self._model_key = model_fingerprint(self.model)
        key = f"{self._model_key}-{video_fingerprint(frames)}"
        if key in self._mem:
            return self._mem[key]
        path = self.folder / f"{key}.pt" if self.folder is not None else None
        if path is not None and path.is_file():
            d = torch.load(path, map_location=self.model.device, weights_only=True)
            feats = VideoFeatures(d["vf"], d["vp"], [tuple(s) for s in d["sizes"]])
        else:
            feats = compute_features(frames, self.model, progress=self.progress,
                                     desc=f"caching features ({name})")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save({"vf": feats.vf, "vp": feats.vp, "sizes": feats.sizes}, tmp)
                tmp.replace(path)  # never a half-written cache file
        self._mem[key] = feats
        return feats

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self._mem.values())
