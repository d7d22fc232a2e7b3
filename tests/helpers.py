"""Test helpers: the input builders of `sam2rl_fast.testing` (shared with the benchmarks), a
sharpened memory attention and an independent reference of stock sam2's."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from sam2rl_fast.ops.rope import apply_rope, rope_tables
from sam2rl_fast.testing import (  # noqa: F401 - the tests import them from here
    SAM2_CONFIGS,
    build_random_predictor,
    memory_attention_inputs,
    moving_square_video,
    random_bank_inputs,
    rel_err,
    shift_object_scores,
    write_jpeg_folder,
)


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
