"""The bundled learned agent, `agent="sam2rl"`: one agent trained across every synthetic
suite for the bundled demo model, read from package data (`sam2rl_fast/assets/agents/`)
where the install ships one. None ships yet (docs/results.md): then `agent="sam2rl"` is a
clear error and the default agent lists leave it out.

Its ONNX export runs by default (onnxruntime is a base dependency); the SB3 zip beside it
is the same agent, for stable-baselines3 or where onnxruntime is missing. Both carry the
layout and the model they were trained for: with another SAM 2 model (a Meta checkpoint)
the tracker refuses the agent, as it refuses any agent file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sam2rl_fast.model.bundled import ASSET_DIR

NAME = "sam2rl"
AGENT_ONNX = ASSET_DIR / "agents" / f"{NAME}.onnx"
AGENT_ZIP = ASSET_DIR / "agents" / f"{NAME}.zip"


def has_bundled_agent() -> bool:
    """Whether this install ships the bundled agent (default agent lists include it then)."""
    return AGENT_ONNX.is_file() or AGENT_ZIP.is_file()


def bundled_agent_file() -> Path:
    """The file `agent="sam2rl"` loads: the ONNX export when onnxruntime can run it, else the
    SB3 zip when stable-baselines3 is installed."""
    onnx_ok = AGENT_ONNX.is_file() and importlib.util.find_spec("onnxruntime") is not None
    if onnx_ok:
        return AGENT_ONNX
    if AGENT_ZIP.is_file() and importlib.util.find_spec("stable_baselines3") is not None:
        return AGENT_ZIP
    if not has_bundled_agent():
        raise FileNotFoundError(f"agent {NAME!r}: this install ships no bundled agent "
                                f"({AGENT_ONNX} is missing); pass a trained agent file instead")
    raise ImportError(f"agent {NAME!r} needs onnxruntime (for {AGENT_ONNX.name}) or "
                      f"stable-baselines3 (for {AGENT_ZIP.name}); pip install onnxruntime")


def load_bundled_agent():
    """The bundled agent as a `MemoryPolicy` named "sam2rl"."""
    path = bundled_agent_file()
    if path.suffix == ".onnx":
        from sam2rl_fast.policies.onnx import OnnxPolicy

        return OnnxPolicy(path)
    from sam2rl_fast.policies.sb3 import Sb3Policy

    return Sb3Policy(path)


BASELINES = ("sam2", "samurai", "dam4sam", "sam2long")


def default_agents(model) -> list[str]:
    """The agents `sam2rl-fast eval` and `demo` compare by default: the stock rule, the
    heuristics (SAMURAI, DAM4SAM, SAM2Long), and the bundled agent where this install has it and it was trained for
    `model` (another model, e.g. a Meta checkpoint, would refuse it)."""
    from sam2rl_fast.policies.base import ObservationLayoutError

    if not has_bundled_agent():
        return list(BASELINES)
    try:
        load_bundled_agent().check_model(model)
    except (ObservationLayoutError, ImportError, FileNotFoundError):
        return list(BASELINES)
    return [*BASELINES, NAME]
