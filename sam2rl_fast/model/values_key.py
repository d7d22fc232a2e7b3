"""`values_key(*tensors)`: what identifies tensors' current values, for caches of things
computed from weights (packed copies, positional encodings) that must not be served stale."""

from __future__ import annotations

import torch


def values_key(*tensors: torch.Tensor | None) -> tuple:
    """Changes when a tensor is written in place (its `_version`), replaced (`.to()`,
    `param.data = ...`, `load_state_dict` into new storage: its storage), or cast."""
    return tuple(None if t is None else (t.data_ptr(), _version(t), t.device, t.dtype) for t in tensors)


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter (and cannot change)
        return None
