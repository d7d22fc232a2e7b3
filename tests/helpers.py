"""Input builders shared by tests and benchmarks (so shapes never drift)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from sam2rl_fast.ops.rope import apply_rope, rope_tables

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


def sharpened(module, gain=2.0):
    """A copy whose cross-attention is peaky and dominant: random init gives near-uniform
    attention weights and a small cross-attention term, which would let errors in the
    keys (RoPE, pointer handling) hide below the tolerance."""
    module = copy.deepcopy(module)
    with torch.no_grad():
        for layer in module.layers:
            ca = layer.cross_attn_image
            ca.q_proj.weight.mul_(gain)
            ca.k_proj.weight.mul_(gain)
            ca.out_proj.weight.mul_(8.0)
    return module


# ---- an independent reference of stock sam2's MemoryAttention (eval), real RoPE
def _rope_attention(attn, q_in, k_in, v_in, cos, sin, num_k_exclude_rope=0,
                    pv_shortcut=False):
    """One sam2 RoPEAttention (one head) on batch-first inputs `[B, L, *]`."""
    q = apply_rope(attn.q_proj(q_in), cos, sin)
    k = attn.k_proj(k_in)
    n_rope = k.shape[1] - num_k_exclude_rope
    reps = n_rope // q.shape[1]  # the query table is tiled over memory frames
    k_rope = apply_rope(k[:, :n_rope], cos.repeat(reps, 1), sin.repeat(reps, 1))
    k = torch.cat([k_rope, k[:, n_rope:]], dim=1)
    scale = q.shape[-1] ** -0.5
    if not pv_shortcut:
        out = F.scaled_dot_product_attention(q, k, attn.v_proj(v_in), scale=scale)
        return attn.out_proj(out)
    p = torch.softmax((q @ k.transpose(1, 2)) * scale, dim=-1)
    w = attn.out_proj.weight @ attn.v_proj.weight  # [d, C]
    b = attn.out_proj.weight @ attn.v_proj.bias + attn.out_proj.bias
    return (p @ v_in) @ w.t() + b


@torch.no_grad()
def memory_attention_ref(
    module,  # a stock sam2 MemoryAttention (weights are read from it)
    curr: torch.Tensor,  # [Nq, B, d]
    memory: torch.Tensor,  # [M, B, C]
    curr_pos: torch.Tensor,  # [Nq, B, d]
    memory_pos: torch.Tensor,  # [M, B, C]
    num_obj_ptr_tokens: int = 0,
    pv_shortcut: bool = False,
) -> torch.Tensor:
    """sam2 `MemoryAttention.forward` in eval mode; returns `[Nq, B, d]`."""
    if isinstance(curr, list):
        curr, curr_pos = curr[0], curr_pos[0]
    Nq = curr.shape[0]
    side = int(round(Nq**0.5))
    if side * side != Nq:
        raise ValueError(f"memory attention needs a square grid, got {Nq} query tokens")
    cos, sin = rope_tables(side, curr.shape[-1], device=curr.device)
    x = curr + 0.1 * curr_pos if module.pos_enc_at_input else curr
    x, qpos = x.transpose(0, 1), curr_pos.transpose(0, 1)
    mem, mpos = memory.transpose(0, 1).to(x.dtype), memory_pos.transpose(0, 1).to(x.dtype)
    for layer in module.layers:
        h = layer.norm1(x)
        q = h + qpos if layer.pos_enc_at_attn else h
        x = x + _rope_attention(layer.self_attn, q, q, h, cos, sin)
        h = layer.norm2(x)
        q = h + qpos if layer.pos_enc_at_cross_attn_queries else h
        k = mem + mpos if layer.pos_enc_at_cross_attn_keys else mem
        x = x + _rope_attention(layer.cross_attn_image, q, k, mem, cos, sin,
                                num_obj_ptr_tokens, pv_shortcut)
        x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
    return module.norm(x).transpose(0, 1)
