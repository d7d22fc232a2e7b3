"""Agent files: what a learned agent was trained for, checked before it runs.

A stable-baselines3 PPO `.zip`

(`sam2rl-fast train`) gets one more member, `sam2rl_fast.json`: the observation layout and
slot count, the signature of the SAM 2 model whose memories it learned to manage, and
training information. Loading an agent checks them against the tracker, so an agent is
never silently run on observations it was not trained for. An exported `.onnx` agent
(`sam2rl-fast export`) carries the same facts in its `metadata_props` (`read_onnx_metadata`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from sam2rl_fast.policies.base import (
    OBS_LAYOUT,
    ObservationLayoutError,
    check_layout,
    obs_size,
)

META_NAME = "sam2rl_fast.json"


class AgentFileError(ValueError):
    """A missing, corrupt or foreign agent file."""


def model_signature(model) -> dict:
    """What an agent depends on in a SAM 2 model: sizes of the memory path and the input."""
    return {
        "image_size": int(model.image_size),
        "hidden_dim": int(model.hidden_dim),
        "mem_dim": int(model.mem_dim),
        "num_maskmem": int(model.num_maskmem),
        "max_obj_ptrs": int(model.max_obj_ptrs_in_encoder),
        "trunk_channels": [int(c) for c in getattr(model.image_encoder.trunk, "channel_list", [])],
    }


def write_metadata(path, *, capacity: int, model=None, training: dict | None = None) -> dict:
    """Add the `sam2rl_fast.json` member to an SB3 zip at `path`."""
    meta = {"format": "sam2rl-fast-agent/1", "layout": OBS_LAYOUT, "capacity": int(capacity),
            "obs_size": obs_size(capacity), "num_actions": int(capacity) + 1,
            "model": model_signature(model) if model is not None else None,
            "training": training or {}}
    with zipfile.ZipFile(path, "a") as z:
        if META_NAME in z.namelist():
            raise AgentFileError(f"{path} already has {META_NAME}")
        z.writestr(META_NAME, json.dumps(meta, indent=2))
    return meta


def read_metadata(path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"agent file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            if META_NAME not in z.namelist():
                raise AgentFileError(f"{path} is not a sam2rl-fast agent (no {META_NAME}: a plain "
                                     "stable-baselines3 file does not say what it was trained for)")
            return json.loads(z.read(META_NAME))
    except (zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
        raise AgentFileError(f"{path} is not a readable agent file: {e}") from e


def check_model(meta: dict, model, who: str) -> None:
    """Raise `ObservationLayoutError` when the agent was trained on another kind of model."""
    want = meta.get("model")
    if want is None or model is None:
        return
    have = model_signature(model)
    diff = {k: (want.get(k), have[k]) for k in have if k in want and want[k] != have[k]}
    if diff:
        txt = ", ".join(f"{k} {a} (agent) vs {b} (model)" for k, (a, b) in diff.items())
        raise ObservationLayoutError(f"{who} was trained on a different SAM 2 model: {txt}")


# members of an SB3 zip that are read; `data` only as JSON, never unpickled
_WEIGHTS, _OPTIMIZER = "policy.pth", "policy.optimizer.pth"
# PPO settings taken from `data` when they are plain JSON values of these types
_PLAIN = {"n_steps": int, "batch_size": int, "n_epochs": int, "gamma": float, "gae_lambda": float,
          "ent_coef": float, "vf_coef": float, "max_grad_norm": float, "learning_rate": float,
          "normalize_advantage": bool, "seed": int}
_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_num_timesteps_at_start",
             "_total_timesteps")
_POLICY_KWARGS = ("capacity", "d_model", "heads", "blocks", "fifo_prior")


def _plain(value, kind):
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _tensors(z: zipfile.ZipFile, member: str, path, device):
    """A `torch.save`d member read with `weights_only=True`: tensors and plain containers
    only; anything that would need unpickling code is refused."""
    import io

    import torch

    try:
        return torch.load(io.BytesIO(z.read(member)), map_location=device, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for other content
        raise AgentFileError(f"{path}: its {member} is not plain weights (it would need code from "
                             f"the file to load, which is never run): {str(e).splitlines()[0]}") from None


def load_sb3(path, device: str = "cpu"):
    """(PPO model, metadata) of an agent file, the layout checked against this version.

    Nothing in the file is executed: SB3's `PPO.load` unpickles the zip's `data` member (the
    spaces, schedules and policy class as cloudpickle), which runs whatever code it holds.
    Here the policy (`SlotPolicy`), its spaces and schedules are rebuilt from the agent's
    own metadata (`sam2rl_fast.json`) and `data`'s plain JSON numbers, and only the
    weights and optimiser state are read, with `torch.load(weights_only=True)`; a file that
    cannot be read this way is refused."""
    try:
        import gymnasium as gym
        import numpy as np
        from stable_baselines3 import PPO
    except ImportError as e:
        raise AgentFileError(f"{path} is a stable-baselines3 agent: running it needs the training "
                             "extra (pip install 'sam2rl-fast[train]'), or export it to ONNX "
                             "(sam2rl-fast export) and run the .onnx file") from e
    from sam2rl_fast.policies.policy_net import SlotPolicy

    meta = read_metadata(path)
    check_layout(meta.get("layout", "?"), meta.get("capacity", -1), meta.get("capacity", -1),
                 meta.get("obs_size"), who=str(path))
    cfg = (meta.get("training") or {}).get("config") or {}
    try:
        with zipfile.ZipFile(Path(path).expanduser()) as z:
            names = z.namelist()
            if "data" not in names or _WEIGHTS not in names:
                raise AgentFileError(f"{path}: not a stable-baselines3 agent (no data or {_WEIGHTS})")
            data = json.loads(z.read("data"))
            weights = _tensors(z, _WEIGHTS, path, device)
            opt = _tensors(z, _OPTIMIZER, path, device) if _OPTIMIZER in names else None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, EOFError) as e:
        raise AgentFileError(f"{path} is not a readable agent file: {e}") from e
    if not isinstance(data, dict) or not isinstance(weights, dict):
        raise AgentFileError(f"{path}: its data or {_WEIGHTS} is not what an agent file holds")
    hyper = {k: data[k] for k, kind in _PLAIN.items() if k in data and _plain(data[k], kind)}
    pk = data.get("policy_kwargs") if isinstance(data.get("policy_kwargs"), dict) else {}
    kwargs = {k: cfg[k] for k in _POLICY_KWARGS if _plain(cfg.get(k), float)}
    kwargs.update({k: pk[k] for k in _POLICY_KWARGS if _plain(pk.get(k), float)})
    kwargs["capacity"] = int(meta["capacity"])
    for k in ("d_model", "heads", "blocks"):
        if k in kwargs:
            kwargs[k] = int(kwargs[k])
    clip = cfg.get("clip_range", 0.2)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (int(meta["obs_size"]),), np.float32)
    act_space = gym.spaces.Discrete(int(meta["num_actions"]))
    try:
        agent = PPO(SlotPolicy, None, device=device, policy_kwargs=kwargs, _init_setup_model=False,
                    clip_range=float(clip) if _plain(clip, float) else 0.2,
                    **{k: v for k, v in hyper.items()})
        n_envs = data.get("n_envs") if _plain(data.get("n_envs"), int) and data["n_envs"] > 0 else 1
        agent.observation_space, agent.action_space, agent.n_envs = obs_space, act_space, n_envs
        agent._setup_model()
        agent.policy.load_state_dict(weights, strict=True)
        if opt is not None:
            agent.policy.optimizer.load_state_dict(opt)
    except Exception as e:  # a network of another shape, a damaged optimiser state
        raise AgentFileError(f"{path}: its weights do not fit the agent its metadata describes "
                             f"({meta['obs_size']} observations, {meta['num_actions']} actions): "
                             f"{str(e).splitlines()[0]}") from None
    for k in _COUNTERS:
        if _plain(data.get(k), int):
            setattr(agent, k, data[k])
    from collections import deque

    # SB3's episode-statistics windows (pickled in `data`): empty; a resume's run state
    # (`rl.resume`) puts the episode window back
    agent.ep_info_buffer = deque(maxlen=agent._stats_window_size)
    agent.ep_success_buffer = deque(maxlen=agent._stats_window_size)
    if _plain(data.get("_current_progress_remaining"), float):
        agent._current_progress_remaining = float(data["_current_progress_remaining"])
    return agent, meta


# ---- exported (.onnx) agents: the same facts in metadata_props
FORMAT = "sam2rl-fast-agent-onnx/1"
INPUT_NAME = "obs"
OUTPUT_NAMES = ("action", "probs")
INPUT_MEANINGS = {"obs": "[batch, obs_size] float32: observation vectors, layout given by the "
                         "'layout' metadata (docs/memory-policy.md)"}
OUTPUT_MEANINGS = {
    "action": "[batch] int64: deterministic action = argmax of the logits (0 = do not store "
              "the candidate memory, k = store it in slot k-1)",
    "probs": "[batch, num_actions] float32: softmax of the logits",
}
# metadata_props every file from export_agent has (read by OnnxPolicy)
REQUIRED_KEYS = ("format", "layout", "capacity", "obs_size", "num_actions", "model", "training")


def read_onnx_metadata(path) -> dict[str, str]:
    """metadata_props of an exported agent, as strings; clear errors for other files."""

    from sam2rl_fast.runtime.onnx_session import load_proto

    path = Path(path).expanduser()
    proto = load_proto(path, "ONNX agent", AgentFileError)
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise AgentFileError(f"{path} is an ONNX model but not a sam2rl-fast agent (no "
                             f"{FORMAT} metadata; make one with `sam2rl-fast export AGENT.zip`)")
    return meta
