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


def load_sb3(path, device: str = "cpu"):
    """(PPO model, metadata) of an agent file, the layout checked against this version."""
    try:
        from stable_baselines3 import PPO
    except ImportError as e:
        raise AgentFileError(f"{path} is a stable-baselines3 agent: running it needs the training "
                             "extra (pip install 'sam2rl-fast[train]'), or export it to ONNX "
                             "(sam2rl-fast export) and run the .onnx file") from e

    meta = read_metadata(path)
    check_layout(meta.get("layout", "?"), meta.get("capacity", -1), meta.get("capacity", -1),
                 meta.get("obs_size"), who=str(path))
    try:
        agent = PPO.load(str(path), device=device)
    except Exception as e:  # SB3 raises many types for damaged members
        raise AgentFileError(f"{path}: stable-baselines3 cannot load it: {e}") from e
    if agent.observation_space.shape != (meta["obs_size"],) or agent.action_space.n != meta["num_actions"]:
        raise AgentFileError(f"{path}: its network takes {agent.observation_space.shape} observations and "
                             f"{agent.action_space.n} actions, its metadata says {meta['obs_size']} / "
                             f"{meta['num_actions']}")
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

    from sam2rl_fast.export.onnx_common import load_proto

    path = Path(path).expanduser()
    proto = load_proto(path, "ONNX agent", AgentFileError)
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise AgentFileError(f"{path} is an ONNX model but not a sam2rl-fast agent (no "
                             f"{FORMAT} metadata; make one with `sam2rl-fast export AGENT.zip`)")
    return meta
