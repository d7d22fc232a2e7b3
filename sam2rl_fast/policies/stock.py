"""SAM 2's own memory rule as a policy: prompt frame + the 6 most recent frames, exactly."""

from __future__ import annotations

import numpy as np

from sam2rl_fast.policies.base import MemoryObservation, MemoryPolicy


class Sam2Policy(MemoryPolicy):
    """Stock SAM 2: every frame is stored; reads follow `StockMemoryRule` (frame distance,
    temporal stride), and memories it can never read again are evicted. Tracking with it
    reproduces `SAM2VideoPredictor.propagate_in_video`."""

    name = "sam2"
    needs_observation = False  # the stock rule looks at frame indices only

    def reset(self, num_objects, capacity, stock):
        super().reset(num_objects, capacity, stock)
        self.read_rule = stock

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        raise RuntimeError("Sam2Policy assigns slots through the stock rule (assign), not decide")

    def assign(self, bank, frame_idx: int, obs: MemoryObservation | None = None,
               reverse: bool = False) -> list[int]:
        return self.stock.assign_memories(bank, frame_idx, is_cond=False, reverse=reverse)
