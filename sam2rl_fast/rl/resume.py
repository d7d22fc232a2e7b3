"""What makes a resumed PPO run continue exactly: the state saved beside each checkpoint.

A checkpoint zip holds the agent and its optimiser; a resume from it alone would start new
episodes with fresh random numbers. `run_state` adds, at a rollout start, the RNGs, the
episodes just started, SB3's episode-statistics window and the logger's values not yet
written; `restore_run_state` puts them back (tests/test_rl_training.py kills a run with
SIGKILL and checks the resumed one equals the uninterrupted run, TensorBoard included).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

_LOGGER_STATE = ("name_to_value", "name_to_count", "name_to_excluded")


def run_state(ppo, venv) -> dict | None:
    """What, besides the agent zip, makes a resume continue exactly: the RNGs (torch samples
    actions, numpy shuffles minibatches, the environment draws episodes), the episodes just
    started and SB3's episode-statistics window. Only at an episode boundary (a rollout
    start when n_steps is a multiple of the episode length, as in every shipped config):
    elsewhere None, and a resume starts new episodes instead."""
    import random

    import torch

    if venv.batch.t != 1:  # reset() prompts frame 0 and segments frame 1: t is 1 at a start
        return None
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(), "env_rng": venv.rng.bit_generator.state,
            "lanes": [dataclasses.astuple(ln) for ln in venv.batch.lanes],
            "ep_info_buffer": list(ppo.ep_info_buffer or []),
            # the last PPO update's train/* values, which SB3 writes with the next rollout's
            "logger": {k: dict(getattr(ppo.logger, k)) for k in _LOGGER_STATE}}


def restore_run_state(ppo, venv, state: dict) -> dict | None:
    import random
    from collections import deque

    import torch

    from sam2rl_fast.rl.episodes import Lane

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    venv.rng.bit_generator.state = state["env_rng"]
    # the episodes the uninterrupted run was about to play, and SB3's view of them
    ppo._last_obs = venv.reset(lanes=[Lane(*ln) for ln in state["lanes"]], reseed=False)
    ppo._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)
    ppo.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=ppo._stats_window_size)
    return state.get("logger")  # for `Progress`: learn() makes a new logger first


def load_run_state(path) -> dict:
    """A run state file, read with `torch.load(weights_only=True)`: tensors, numpy arrays
    and plain containers only (the few numpy types it holds are allowed), never code."""
    import torch

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct, scalar
    allowed = [np.ndarray, np.dtype, _reconstruct, scalar] + [
        type(np.dtype(t)) for t in (np.bool_, np.uint8, np.int32, np.int64, np.uint32, np.uint64,
                                    np.float32, np.float64)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


def state_path(agent_zip: Path) -> Path:
    return agent_zip.with_suffix(".state.pt")
