"""Learned memory policies: any function from observation vectors to discrete actions.

Action space (layout `OBS_LAYOUT`): 0 = do not store the candidate; k in 1..S = store it in
slot k-1. An action that names a conditioning (prompted) slot is treated as 0, so an
agent can never drop the prompt. Agents trained with stable-baselines3 and agents
exported to ONNX plug in through this class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sam2rl_fast.policies.base import (
    OBS_LAYOUT,
    MemoryObservation,
    MemoryPolicy,
    check_layout,
    obs_size,
)


class VectorPolicy(MemoryPolicy):
    """A policy from `predict(obs [B, D] float32) -> actions [B] int`.

    `layout` and `capacity` state what the agent was trained for; the tracker refuses it
    when they do not match its own bank.
    """

    fixed_capacity = True  # trained for a bank of `capacity` slots

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], capacity: int,
                 layout: str = OBS_LAYOUT, name: str = "agent"):
        self.predict, self.agent_capacity, self.layout, self.name = predict, capacity, layout, name

    def reset(self, num_objects, capacity, stock):
        check_layout(self.layout, self.agent_capacity, capacity, obs_size(self.agent_capacity), self.name)
        super().reset(num_objects, capacity, stock)

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        act = np.asarray(self.predict(obs.vector()), dtype=np.int64).reshape(-1)
        if act.shape != (obs.num_objects,):
            raise ValueError(f"{self.name}: predicted {act.shape} actions for {obs.num_objects} objects")
        return actions_to_slots(act, obs.slot_is_cond, obs.capacity, self.name)


def actions_to_slots(actions, slot_is_cond: np.ndarray, capacity: int, who: str = "agent") -> np.ndarray:
    """Actions [B] (0 = drop, k = slot k-1) -> slots [B] (-1 = not stored).

    An action naming a conditioning (prompted) slot becomes -1: the prompt is never dropped."""
    act = np.asarray(actions).reshape(-1)
    if not np.issubdtype(act.dtype, np.integer):
        if not np.all(np.equal(np.mod(act, 1), 0)):
            raise ValueError(f"{who}: actions must be integers, got {act.tolist()}")
        act = act.astype(np.int64)
    if ((act < 0) | (act > capacity)).any():
        raise ValueError(f"{who}: actions {act.tolist()} outside [0, {capacity}]")
    slot = act.astype(np.int64) - 1
    rows = np.arange(len(act))
    pinned = (slot >= 0) & slot_is_cond[rows, np.clip(slot, 0, None)]
    return np.where(pinned, -1, slot)
