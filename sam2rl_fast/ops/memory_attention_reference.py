"""Pure-PyTorch reference of sam2's MemoryAttention with RoPE as real cos/sin arithmetic.

Stock sam2 rotates queries and keys through complex numbers (`torch.polar`,
`view_as_complex`), which also breaks ONNX export (sam2 issue #186). This reference is
the same function written with real arithmetic and the exact PV shortcut
(`out_proj(softmax(S) @ (m Wv^T + bv)) = (softmax(S) @ m) @ (Wo Wv)^T + (Wo bv + bo)`),
the definition the fused kernels are tested against.

Shapes: Nq = HW query tokens, M memory tokens (spatial tokens first, then
`num_obj_ptr_tokens` pointer tokens), B objects, d = 256, C = 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rope_tables(side: int, dim: int = 256, theta: float = 10000.0,
                device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin `[side*side, dim//2]` of sam2's axial RoPE for pair p = (2p, 2p+1).

    Pairs 0..dim/4-1 rotate by x * theta_k, pairs dim/4..dim/2-1 by y * theta_k, with
    theta_k = theta^(-4k/dim), x = t mod side, y = t div side.
    """
    k = torch.arange(0, dim, 4, device=device)[: dim // 4].float()
    freqs = 1.0 / (theta ** (k / dim))
    t = torch.arange(side * side, dtype=torch.float32, device=device)
    ang = torch.cat([torch.outer(t % side, freqs),
                     torch.outer(torch.div(t, side, rounding_mode="floor"), freqs)], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x `[..., L, dim]` by tables `[L, dim//2]`."""
    x2 = x.unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def rope_attention_ref(q, k, v, side, num_k_exclude_rope=0, scale=None, theta=10000.0):
    """Reference of the fused op: (out [B, Nq, Dv], lse [B, Nq]) in the inputs' precision."""
    cos, sin = rope_tables(side, q.shape[-1], theta, device=q.device, dtype=q.dtype)
    n_rope = k.shape[1] - num_k_exclude_rope
    reps = n_rope // q.shape[1]
    qr = apply_rope(q, cos, sin)
    kr = torch.cat([apply_rope(k[:, :n_rope], cos.repeat(reps, 1), sin.repeat(reps, 1)),
                    k[:, n_rope:]], dim=1)
    s = (qr @ kr.transpose(1, 2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


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
