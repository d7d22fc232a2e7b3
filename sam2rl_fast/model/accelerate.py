"""`accelerate(predictor)`: put sam2rl-fast's kernels into an existing stock sam2 model."""

from __future__ import annotations

from torch import nn

from sam2rl_fast.model.memory_attention import FastMemoryAttention


def accelerate(model: nn.Module) -> nn.Module:
    """Swap `FastMemoryAttention` into a stock `SAM2VideoPredictor` (or any `SAM2Base`).

    In place: `model.memory_attention` becomes a `FastMemoryAttention` that shares the
    stock weights (the state dict keys do not change), so `predictor.propagate_in_video`
    yields the same masks, faster. Idempotent: an accelerated model is returned as is.

    Args:
        model: a sam2 `SAM2Base`, e.g. from `sam2.build_sam.build_sam2_video_predictor`.

    Returns:
        The same object, accelerated.

    Raises:
        TypeError: `model` is not a sam2 model, or its memory attention is not sam2's
            `MemoryAttention` (e.g. replaced by other code).
    """
    from sam2.modeling.memory_attention import MemoryAttention
    from sam2.modeling.sam2_base import SAM2Base

    if not isinstance(model, SAM2Base):
        hint = (" (a SAM2ImagePredictor has no memory attention to accelerate)"
                if hasattr(model, "model") and isinstance(getattr(model, "model"), SAM2Base) else "")
        raise TypeError(f"sam2rl_fast.model.accelerate needs a sam2 model (SAM2VideoPredictor or "
                        f"SAM2Base), got {type(model).__name__}{hint}")
    current = model.memory_attention
    if isinstance(current, FastMemoryAttention):
        return model
    if not isinstance(current, MemoryAttention):
        raise TypeError(f"sam2rl_fast.model.accelerate: model.memory_attention is a "
                        f"{type(current).__name__}, not sam2's MemoryAttention")
    # A vos_optimized predictor's MemoryAttention carries a torch.compile'd instance
    # `forward`; the replacement does not inherit it.
    model.memory_attention = FastMemoryAttention.from_sam2(current)
    return model
