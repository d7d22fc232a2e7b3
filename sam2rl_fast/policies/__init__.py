"""Memory policies: who decides what SAM 2 keeps in its memory bank."""

from __future__ import annotations

from pathlib import Path

from sam2rl_fast.policies import bundled
from sam2rl_fast.policies.base import (
    CANDIDATE_FEATURES,
    OBS_LAYOUT,
    SLOT_FEATURES,
    MemoryObservation,
    MemoryPolicy,
    ObservationLayoutError,
    RecencyReadRule,
    obs_size,
)
from sam2rl_fast.policies.dam4sam import Dam4SamPolicy
from sam2rl_fast.policies.learned import VectorPolicy
from sam2rl_fast.policies.sam2long import Sam2LongPolicy
from sam2rl_fast.policies.samurai import SamuraiPolicy
from sam2rl_fast.policies.stock import Sam2Policy

POLICIES = {"sam2": Sam2Policy, "samurai": SamuraiPolicy, "dam4sam": Dam4SamPolicy,
            "sam2long": Sam2LongPolicy}


def make_policy(agent) -> MemoryPolicy:
    """A policy for `agent`: a name in POLICIES, "sam2rl" (the bundled learned agent), a
    `MemoryPolicy`, or an agent file."""
    if isinstance(agent, MemoryPolicy):
        return agent
    if isinstance(agent, str) and agent.lower() in POLICIES:
        return POLICIES[agent.lower()]()
    if isinstance(agent, str) and agent.lower() == bundled.NAME:  # the bundled learned agent
        return bundled.load_bundled_agent()
    if isinstance(agent, (str, Path)):
        path = Path(agent).expanduser()
        if path.suffix in (".zip", ".onnx"):
            if not path.is_file():
                raise FileNotFoundError(f"agent file not found: {path}")
            if path.suffix == ".zip":
                from sam2rl_fast.policies.sb3 import (
                    Sb3Policy,  # needs stable-baselines3
                )

                return Sb3Policy(path)
            from sam2rl_fast.policies.onnx import OnnxPolicy  # needs onnxruntime

            return OnnxPolicy(path)
        raise ValueError(f"unknown agent {agent!r}: use one of {sorted([*POLICIES, bundled.NAME])}, a MemoryPolicy, "
                         "or an agent file (.zip, .onnx)")
    raise TypeError(f"agent must be a name, a MemoryPolicy or a path, got {type(agent).__name__}")


__all__ = ["CANDIDATE_FEATURES", "OBS_LAYOUT", "POLICIES", "SLOT_FEATURES", "Dam4SamPolicy",
           "MemoryObservation", "MemoryPolicy", "ObservationLayoutError", "RecencyReadRule",
           "Sam2LongPolicy", "Sam2Policy", "SamuraiPolicy", "VectorPolicy", "make_policy", "obs_size"]
