"""The image encoder's positional encodings, computed once per feature size instead of per frame.

Stock sam2 recomputes them for every frame: Hiera interpolates its position embedding
bicubically (6 ms a frame at 512 px on the 2-core EPYC), and each `PositionEmbeddingSine`
returns `cache[size].repeat(B, 1, 1, 1)` of a channels-last view, a transposing copy of
256 x 128 x 128 floats at 512 px (17 ms a frame, 4% of a bf16 frame). Both depend only on
the weights and the feature size, so while the context is open each is computed the
stock way once per (size, dtype, autocast state) and then reused: the same values, bit
for bit, contiguous.

    with cached_encodings(model):
        model.forward_image(img)
"""

from __future__ import annotations

import contextlib
import types

import torch
from torch import nn

from sam2rl_fast.model.values_key import values_key


def _autocast_key():
    cpu = torch.is_autocast_enabled("cpu")
    return cpu, torch.get_autocast_dtype("cpu") if cpu else None


def _sine_forward(self, x: torch.Tensor) -> torch.Tensor:
    # Stock returns float32 and its callers cast to x's dtype; returning x's dtype directly
    # makes that cast a no-op with the same values. Expanded, not copied, over the batch.
    key = (x.shape[-2], x.shape[-1], x.dtype, x.device)
    pe = self._sam2rl_cache.get(key)
    if pe is None:
        pe = type(self).forward(self, x[:1]).to(x.dtype).contiguous()
        self._sam2rl_cache[key] = pe
    return pe.expand(x.shape[0], -1, -1, -1)


def _hiera_pos_embed(self, hw):
    key = (tuple(hw), _autocast_key(), values_key(self.pos_embed, self.pos_embed_window))
    pe = self._sam2rl_cache.get(key)
    if pe is None:
        pe = type(self)._get_pos_embed(self, hw).contiguous()
        self._sam2rl_cache.clear()  # one size per video: keep the latest only
        self._sam2rl_cache[key] = pe
    return pe


@contextlib.contextmanager
def cached_encodings(model: nn.Module, enabled: bool = True):
    """Reuse the positional encodings of every `PositionEmbeddingSine` and Hiera trunk in
    `model` across frames while the context is open (per instance; restored on exit)."""
    if not enabled:
        yield
        return
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    patched = []
    for m in model.modules():
        if isinstance(m, PositionEmbeddingSine) and "forward" not in m.__dict__:
            m._sam2rl_cache = {}
            m.forward = types.MethodType(_sine_forward, m)
            patched.append((m, "forward"))
        elif isinstance(m, Hiera) and "_get_pos_embed" not in m.__dict__:
            m._sam2rl_cache = {}
            m._get_pos_embed = types.MethodType(_hiera_pos_embed, m)
            patched.append((m, "_get_pos_embed"))
    try:
        yield
    finally:
        for m, name in patched:
            delattr(m, name)
            del m._sam2rl_cache
