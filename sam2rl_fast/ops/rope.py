"""sam2's axial RoPE as real cos/sin arithmetic, the one copy every path uses (the fused
op's CPU and CUDA kernels compute the same angles with `rope_angle` in
`csrc/memory_attention/attention_math.h`).

Stock sam2 rotates through complex numbers (`torch.polar`, `view_as_complex`), which also
breaks ONNX export (sam2 issue #186); this is the same rotation on adjacent channel pairs.
"""

from __future__ import annotations

import torch


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
