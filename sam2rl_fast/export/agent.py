"""Trained memory-control agents as ONNX models: export, onnxruntime runner, CLI hooks.

`export_agent` turns an agent file (stable-baselines3 PPO `.zip` with sam2rl-fast
metadata, see `sam2rl_fast.rl.agents`) into one self-contained `.onnx` file holding the
policy network only (no value head, no optimiser):

- input `obs` `[batch, obs_size]` float32 (dynamic batch), observation layout `OBS_LAYOUT`;
- output `action` `[batch]` int64: argmax of the action logits, i.e. the action of SB3's
  `predict(obs, deterministic=True)`;
- output `probs` `[batch, num_actions]` float32: softmax of the logits (the policy's
  action distribution).

What the agent was trained for travels in the file's `metadata_props` (strings; JSON where
structured): `layout`, `capacity`, `obs_size`, `num_actions`, `model` (the SAM 2 model
signature), `training`, plus the input/output names and meanings. `OnnxPolicy` reads them
back and refuses a file made for another layout, slot count or kind of SAM 2 model, like
`Sb3Policy` does for the `.zip`.

`OnnxPolicy` runs the file with onnxruntime alone (the network needs neither torch nor
stable-baselines3 at run time); `export/run_onnx_policy.py` shows the same without
sam2rl-fast at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from sam2rl_fast.export.onnx_common import quiet_exporter
from sam2rl_fast.policies.agent_file import (
    FORMAT,
    INPUT_MEANINGS,
    INPUT_NAME,
    OUTPUT_MEANINGS,
    OUTPUT_NAMES,
    AgentFileError,
)
from sam2rl_fast.policies.agent_file import read_onnx_metadata as read_metadata
from sam2rl_fast.policies.onnx import OnnxPolicy  # noqa: F401 - its home before the move
from sam2rl_fast.runtime.onnx_session import default_providers  # noqa: F401 - re-exported

PRODUCER = "sam2rl_fast.export.agent"

log = logging.getLogger(__name__)


# ---- export ---------------------------------------------------------------------------------


def _policy_module(agent):
    """nn.Module obs -> (action, probs) over an SB3 actor-critic policy with Discrete actions."""
    import gymnasium as gym
    import torch
    from torch import nn

    if not isinstance(agent.action_space, gym.spaces.Discrete):
        raise AgentFileError(f"export supports discrete actions, the agent has {agent.action_space}")

    class PolicyNet(nn.Module):
        def __init__(self, policy):
            super().__init__()
            self.policy = policy

        def forward(self, obs):
            p = self.policy
            features = p.extract_features(obs, p.pi_features_extractor)
            logits = p.action_net(p.mlp_extractor.forward_actor(features))
            return torch.argmax(logits, dim=1), torch.softmax(logits, dim=1)

    return PolicyNet(agent.policy.to("cpu").eval()).eval()


def _metadata(meta: dict, agent_zip: Path, opset: int) -> dict[str, str]:
    return {
        "format": FORMAT,
        "producer": PRODUCER,
        "layout": str(meta["layout"]),
        "capacity": str(int(meta["capacity"])),
        "obs_size": str(int(meta["obs_size"])),
        "num_actions": str(int(meta["num_actions"])),
        "model": json.dumps(meta.get("model")),
        "training": json.dumps(meta.get("training") or {}),
        "source": agent_zip.name,
        "agent_format": str(meta.get("format", "")),
        "opset": str(int(opset)),
        "input_names": json.dumps([INPUT_NAME]),
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "inputs": json.dumps(INPUT_MEANINGS),
        "outputs": json.dumps(OUTPUT_MEANINGS),
    }


def _verify(path: Path, agent, size: int, n: int = 256) -> None:
    """Run the written file in onnxruntime (CPU) against SB3 on random observations."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    obs = rng.uniform(-1.0, 1.5, (n, size)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    act, probs = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: obs})
    with torch.no_grad():
        ref = agent.policy.get_distribution(torch.as_tensor(obs)).distribution.probs.numpy()
    err = float(np.abs(probs - ref).max())
    # Actions must agree wherever the policy is not tied to within float32 noise.
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    bad = int(((act != ref.argmax(1)) & clear).sum())
    if err > 1e-4 or bad:
        raise AgentFileError(f"the exported graph disagrees with the agent (max prob error {err:.2e}, "
                             f"{bad} different actions of {n}); nothing written")


def export_agent(agent_zip, onnx_path, *, opset: int = 17, overwrite: bool = False) -> Path:
    """Write the policy network of agent file `agent_zip` as ONNX to `onnx_path`; returns it.

    The file is self-contained (weights inside), passes `onnx.checker.check_model`, has a
    dynamic batch, and carries the agent's metadata (see the module docstring). Before the
    file is moved into place it is run in onnxruntime against the SB3 network.
    """
    import onnx
    import torch

    from sam2rl_fast.policies.agent_file import load_sb3

    agent_zip, path = Path(agent_zip).expanduser(), Path(onnx_path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if int(opset) < 17:
        raise AgentFileError(f"opset {opset} < 17 is not supported (the network uses "
                             "LayerNormalization, an opset 17 operator)")
    agent, meta = load_sb3(agent_zip)
    size = int(meta["obs_size"])
    module = _policy_module(agent)
    example = torch.zeros(2, size)  # batch 2, not 1: keeps the batch dimension symbolic
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target, then moved into place: a failed export leaves no file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), quiet_exporter():
            prog = torch.onnx.export(module, (example,), dynamo=True,
                                     dynamic_shapes={"obs": {0: torch.export.Dim("batch")}},
                                     input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                     opset_version=int(opset), external_data=False, verbose=False)
        proto = prog.model_proto
        got = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if got != int(opset):
            raise AgentFileError(f"the exporter produced opset {got}, not {opset}")
        proto.doc_string = (f"sam2rl-fast memory-control agent ({agent_zip.name}): obs -> action, "
                            f"probs; layout {meta['layout']}, {meta['capacity']} slots")
        del proto.metadata_props[:]
        for k, v in _metadata(meta, agent_zip, opset).items():
            proto.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(tmp))
        _verify(tmp, agent, size)
        if path.exists() and not overwrite:  # created meanwhile by someone else
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---- CLI hooks ------------------------------------------------------------------------------


def add_export_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("agent", metavar="AGENT.zip",
                        help="a trained agent file (sam2rl-fast train writes them)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def export_cli(args: argparse.Namespace) -> int:
    """Export an agent; 0 on success, 2 on a user error (message on stderr)."""
    import sys

    from sam2rl_fast.policies.base import ObservationLayoutError

    try:
        from sam2rl_fast.outputs import check_out_file

        out = Path(args.output).expanduser()
        check_out_file(out, [args.agent], "--output")
        if out.suffix != ".onnx":
            raise AgentFileError(f"output {out} should end in .onnx (that is how trackers "
                                 "recognise an ONNX agent)")
        path = export_agent(args.agent, out, opset=args.opset, overwrite=args.overwrite)
    except (AgentFileError, ObservationLayoutError, FileExistsError, FileNotFoundError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_metadata(path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): layout {meta['layout']}, "
          f"{meta['capacity']} slots, obs_size {meta['obs_size']}, {meta['num_actions']} actions, "
          f"opset {meta['opset']}; checked against the agent in onnxruntime")
    return 0


__all__ = ["FORMAT", "OnnxPolicy", "add_export_args", "default_providers", "export_agent",
           "export_cli", "read_metadata"]
