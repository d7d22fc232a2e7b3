"""How a driver runs the model: the one setup of `FastTracker` and the RL episodes.

A driver (the tracker, `sam2rl_fast.rl.episodes.EpisodeBatch`) picks the memory attention
once (sam2rl-fast's fused one or the model's own), tracks inside `running()` (the CPU's
oneDNN-packed Linear layers and the cached positional encodings, restored afterwards),
runs the model's work of each call under `autocast()` (its precision) and builds its
steps with `step()`: a `TrackingStep`, or a `PathwayStep` for a policy that keeps
pathways (SAM2Long). Both steps offer one interface (`reset`, `expand`, `prompt`,
`track`, `best_lane`, `bank`), so a driver needs no special case for either.
"""

from __future__ import annotations

import contextlib

from sam2rl_fast.model.cached_encodings import cached_encodings
from sam2rl_fast.model.cpu_linear import packed_linears
from sam2rl_fast.tracking.pathways import PathwayStep
from sam2rl_fast.tracking.step import (
    TrackingStep,
    check_precision,
    pick_memory_attention,
    precision_autocast,
)


class TrackingSetup:
    """The model's configuration for a driver.

    fast_attention: sam2rl-fast's fused memory attention (None: on the CPU, where it is
    faster; `pick_memory_attention`). fast_linears: on the CPU, the model's fp32 Linear
    layers through oneDNN's prepacked kernels while `running()`. precision: "fp32" or
    "bf16" (bf16 autocast around the model's work, `autocast()`).
    """

    def __init__(self, model, *, fast_attention: bool | None = None, fast_linears: bool = True,
                 precision: str = "fp32"):
        self.model = model
        self.precision = check_precision(precision)
        self.memory_attention, self.attention_impl = pick_memory_attention(model, fast_attention)
        self.fast_linears = bool(fast_linears) and model.device.type == "cpu"

    def step(self, capacity: int, policy=None) -> TrackingStep:
        """A step of `capacity` memory slots per lane: a `PathwayStep` when `policy` keeps
        pathways (SAM2Long: P lanes per object), else a `TrackingStep`."""
        if getattr(policy, "pathways", None):
            return PathwayStep(self.model, self.memory_attention, capacity, policy)
        return TrackingStep(self.model, self.memory_attention, capacity)

    @contextlib.contextmanager
    def running(self):
        """The context a driver tracks in, for its whole run (restored when it ends)."""
        with packed_linears(self.model, enabled=self.fast_linears), cached_encodings(self.model):
            yield

    def autocast(self):
        """The context of the model's work of one call: enter it around that work only
        (autocast is thread state; a caller's code between calls must not run under it)."""
        return precision_autocast(self.precision, self.model.device.type)


__all__ = ["TrackingSetup"]
