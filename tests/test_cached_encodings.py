"""Cached positional encodings: the image encoder's outputs stay bit-identical, are restored."""

import pytest
import torch

from sam2rl_fast.model.cached_encodings import cached_encodings
from tests.helpers import build_random_predictor


def _features(p, img):
    out = p.forward_image(img)
    return [*out["backbone_fpn"], *out["vision_pos_enc"]]


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_image_features_bit_identical(bf16):
    p = build_random_predictor("sam2.1", 128)
    img = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ref = _features(p, img)
        with cached_encodings(p):
            first, again = _features(p, img), _features(p, img)  # computed, then reused
            assert len(p.image_encoder.trunk._sam2rl_cache) == 1
            assert len(p.image_encoder.neck.position_encoding._sam2rl_cache) >= len(ref) // 2  # one per level
    for r, a, b in zip(ref, first, again):
        assert r.dtype == a.dtype and r.shape == a.shape
        assert torch.equal(r, a) and torch.equal(r, b)
    assert not any(k in m.__dict__ for m in p.modules() for k in ("_sam2rl_cache", "_get_pos_embed"))
    assert "forward" not in p.image_encoder.neck.position_encoding.__dict__


def test_changed_weights_and_sizes_are_seen():
    p = build_random_predictor("sam2.1", 128)
    trunk = p.image_encoder.trunk
    with torch.no_grad(), cached_encodings(p):
        a = trunk._get_pos_embed((32, 32)).clone()
        trunk.pos_embed.add_(1.0)  # an in-place update (fine-tuning) must not be served stale
        b = trunk._get_pos_embed((32, 32))
        c = trunk._get_pos_embed((16, 16))  # another frame size
        sine = p.image_encoder.neck.position_encoding
        x8, x4 = torch.zeros(1, 256, 8, 8), torch.zeros(3, 256, 4, 4)
        pe8, pe4 = sine(x8), sine(x4)
    with torch.no_grad():
        assert torch.equal(b, type(trunk)._get_pos_embed(trunk, (32, 32)))
        assert torch.equal(c, type(trunk)._get_pos_embed(trunk, (16, 16)))
        assert not torch.equal(a, b)
        assert torch.equal(pe8, sine(x8)) and torch.equal(pe4, sine(x4)) and pe4.shape[0] == 3
