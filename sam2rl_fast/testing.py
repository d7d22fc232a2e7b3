"""Random inputs and random-weight stock models, built one way for the tests, the benchmarks
and anyone checking the kernels or the parity with stock sam2 on their own machine (so
shapes never drift between them). Nothing in the library imports this module."""

from __future__ import annotations

import numpy as np
import torch

SAM2_CONFIGS = {
    "sam2.1": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2": "configs/sam2/sam2_hiera_t.yaml",
}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Norm-wise relative error; NaN anywhere fails."""
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any() or torch.isnan(ref).any():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def random_bank_inputs(B=2, S=7, side=16, C=64, D=256, R=16, N=5, P=6, T=7,
                       dtype=torch.bfloat16, device="cpu", gen=None):
    """Random bank contents and a random selection for `memory_gather`."""
    HW = side * side
    bank = torch.randn(B, S, HW, C, generator=gen).to(dtype).to(device)
    spos = torch.randn(HW, C, generator=gen).to(device)
    tpos = torch.randn(T, C, generator=gen).to(device)
    slots = torch.stack([torch.randperm(S, generator=gen)[:N] for _ in range(B)]).to(device)
    tslots = torch.randint(0, T, (B, N), generator=gen).to(device)
    ptrs = torch.randn(B, R, D, generator=gen).to(device)
    ptr_idx = torch.stack([torch.randperm(R, generator=gen)[:P] for _ in range(B)]).to(device)
    ptr_pos = torch.randn(B, P, C, generator=gen).to(device)
    return bank, spos, tpos, slots, tslots, ptrs, ptr_idx, ptr_pos


def moving_square_video(T=12, H=96, W=128, n_obj=1, seed=0):
    """[T, H, W, 3] uint8 frames of textured squares moving over noise, and [T, n_obj, H, W] masks."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frames = np.repeat(bg[None], T, 0).copy()
    masks = np.zeros((T, n_obj, H, W), dtype=bool)
    for k in range(n_obj):
        size = H // 4
        x0, y0 = rng.integers(0, W - size), rng.integers(0, H - size)
        vx, vy = rng.integers(-4, 5), rng.integers(-3, 4)
        color = rng.integers(0, 255, 3)
        for t in range(T):
            x = int(np.clip(x0 + vx * t, 0, W - size))
            y = int(np.clip(y0 + vy * t, 0, H - size))
            frames[t, y:y + size, x:x + size] = color
            masks[t, k, y:y + size, x:x + size] = True
    return frames, masks


def write_jpeg_folder(frames: np.ndarray, folder) -> str:
    """Frames [T, H, W, 3] uint8 as `folder`/00000.jpg, ... (quality 95); returns the folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.jpg", quality=95)
    return str(folder)


def build_random_predictor(config="sam2.1", image_size=256, extra=(), seed=0, device="cpu",
                           vos_optimized=False):
    """A random-weight stock SAM2VideoPredictor (on the CPU unless told)."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    return build_sam2_video_predictor(
        SAM2_CONFIGS[config], ckpt_path=None, device=device, vos_optimized=vos_optimized,
        hydra_overrides_extra=[f"++model.image_size={image_size}", *extra],
    )


def shift_object_scores(predictor, delta: float):
    """Add `delta` to the object-score head's output bias. Random weights predict 'no object'
    at random: +20 makes every frame's mask come from the decoder (parity then compares real
    masks, not empty ones); -100 marks every object as absent (occlusion handling)."""
    head = [m for m in predictor.sam_mask_decoder.pred_obj_score_head.modules()
            if isinstance(m, torch.nn.Linear)][-1]
    head.bias.data += delta
    return predictor


def memory_attention_inputs(side, B, n_mem, n_ptr, d=256, C=64, device="cpu",
                            dtype=torch.float32, gen=None):
    """Random sequence-first inputs of sam2's memory attention: curr, memory, curr_pos,
    memory_pos ([Nq, B, d], [M, B, C], [Nq, B, d], [M, B, C]) with M = n_mem * Nq + n_ptr."""
    Nq = side * side
    M = n_mem * Nq + n_ptr

    def r(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    return r(Nq, B, d), r(M, B, C), r(Nq, B, d), r(M, B, C)
