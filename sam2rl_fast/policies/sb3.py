"""A stable-baselines3 agent file (`.zip`, `sam2rl-fast train`) as a memory policy.
Needs stable-baselines3 (the `[train]` extra); an exported `.onnx` agent does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam2rl_fast.policies.agent_file import check_model, load_sb3
from sam2rl_fast.policies.learned import VectorPolicy


class Sb3Policy(VectorPolicy):
    """A trained agent file as a `MemoryPolicy` (deterministic actions)."""

    def __init__(self, path, device: str = "cpu"):
        self.path = Path(path)
        self.agent, self.meta = load_sb3(path, device)
        super().__init__(self._predict, self.meta["capacity"], self.meta["layout"], name=self.path.stem)

    def _predict(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.predict(obs, deterministic=True)[0]

    def check_model(self, model) -> None:
        check_model(self.meta, model, str(self.path))
