"""Typed Python entry points of the compiled ops (`torch.ops.sam2rl_fast.*`).

Each op has a pure-PyTorch reference in `sam2rl_fast.ops.reference`.
"""

from sam2rl_fast.ops.memory_bank import (
    memory_append,
    memory_gather,
    memory_gather_varlen,
)
from sam2rl_fast.ops.rope_attention import rope_attention

__all__ = ["memory_append", "memory_gather", "memory_gather_varlen", "rope_attention"]
