"""Fused RoPE attention op (`torch.ops.sam2rl_fast.rope_attention`), the core of sam2's memory attention."""

from __future__ import annotations

import torch

from sam2rl_fast._extension import _C, require_extension


def rope_attention(
    q: torch.Tensor,  # [B, Nq, D] projected queries, not rotated
    k: torch.Tensor,  # [B, M, D] projected keys, not rotated
    v: torch.Tensor,  # [B, M, Dv]
    side: int,  # query grid side, Nq = side * side
    num_k_exclude_rope: int = 0,  # trailing keys left unrotated (object pointers)
    scale: float | None = None,  # default 1 / sqrt(D)
    theta: float = 10000.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale * rope(q) rope(k)^T) v without materialising scores or rotated keys.

    Returns ``(out [B, Nq, Dv], lse [B, Nq])``.
    """
    require_extension()
    if scale is None:
        scale = q.shape[-1] ** -0.5
    return torch.ops.sam2rl_fast.rope_attention(q, k, v, side, num_k_exclude_rope, scale, theta)


if _C is not None:

    @torch.library.register_fake("sam2rl_fast::rope_attention")
    def _rope_attention_fake(q, k, v, side, num_k_exclude_rope, scale, theta):
        torch._check(q.shape[1] == side * side)
        torch._check(k.shape[0] == q.shape[0] and v.shape[1] == k.shape[1])
        B, Nq = q.shape[0], q.shape[1]
        return q.new_empty((B, Nq, v.shape[2])), q.new_empty((B, Nq), dtype=torch.float32)
