"""accelerate(predictor): same masks from propagate_in_video as stock sam2."""

import numpy as np
import pytest
import torch

from sam2rl_fast import FastMemoryAttention, accelerate
from tests.helpers import build_random_predictor, moving_square_video, write_jpeg_folder

T = 16


def track(predictor, video_dir, masks):
    state = predictor.init_state(video_dir)
    for k in range(masks.shape[1]):
        predictor.add_new_mask(state, 0, k, masks[0, k])
    logits = {f: lg.clone() for f, _, lg in predictor.propagate_in_video(state)}
    return torch.stack([logits[f] for f in range(T)])  # [T, n_obj, 1, H, W]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter, union = (a & b).sum().item(), (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sam2.1", "sam2"])
def test_propagate_same_masks(tmp_path, config):
    frames, masks = moving_square_video(T, n_obj=2, seed=3)
    video = write_jpeg_folder(frames, tmp_path / "video")
    predictor = build_random_predictor(config, 256)
    ref = track(predictor, video, masks)
    assert accelerate(predictor) is predictor
    assert isinstance(predictor.memory_attention, FastMemoryAttention)
    calls = []
    predictor.memory_attention.register_forward_hook(lambda *a: calls.append(1))
    out = track(predictor, video, masks)
    # Every non-prompt frame and object ran through the fast module.
    assert len(calls) == (T - 1) * masks.shape[1]
    ious = [iou(out[f, k] > 0, ref[f, k] > 0) for f in range(T) for k in range(masks.shape[1])]
    assert min(ious) >= 0.99, f"per-frame mask IoU {np.round(ious, 4).tolist()}"
    # The masks must not be trivial (all empty / all full), or IoU says nothing.
    fg = (ref > 0).float().mean().item()
    assert 0.001 < fg < 0.999
    assert (out - ref).abs().max().item() <= 1e-2 * ref.abs().max().item()


def test_idempotent_and_state_dict_unchanged():
    predictor = build_random_predictor("sam2.1", 256)
    keys = list(predictor.state_dict())
    accelerate(predictor)
    fast = predictor.memory_attention
    assert accelerate(predictor) is predictor and predictor.memory_attention is fast
    assert list(predictor.state_dict()) == keys
    assert predictor.memory_attention.layers[0].self_attn.q_proj.weight.data_ptr() == \
        fast.layers[0].self_attn.q_proj.weight.data_ptr()


@pytest.mark.parametrize("obj", [torch.nn.Linear(2, 2), object(), "sam2"])
def test_rejects_non_sam2_objects(obj):
    with pytest.raises(TypeError, match="needs a sam2 model"):
        accelerate(obj)


def test_rejects_replaced_memory_attention():
    predictor = build_random_predictor("sam2.1", 256)
    predictor.memory_attention = torch.nn.Identity()
    with pytest.raises(TypeError, match="not sam2's MemoryAttention"):
        accelerate(predictor)
