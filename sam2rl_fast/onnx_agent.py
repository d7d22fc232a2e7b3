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

from sam2rl_fast.onnx_common import (
    default_providers,
    load_proto,
    open_session,
    quiet_exporter,
)
from sam2rl_fast.policies.base import check_layout
from sam2rl_fast.policies.learned import VectorPolicy
from sam2rl_fast.rl.agents import AgentFileError, check_model

FORMAT = "sam2rl-fast-agent-onnx/1"
PRODUCER = "sam2rl_fast.onnx_agent"
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

    from sam2rl_fast.rl.agents import load_sb3

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


# ---- runner ---------------------------------------------------------------------------------


def read_metadata(path) -> dict[str, str]:
    """metadata_props of an exported agent, as strings; clear errors for other files."""

    path = Path(path).expanduser()
    proto = load_proto(path, "ONNX agent", AgentFileError)
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise AgentFileError(f"{path} is an ONNX model but not a sam2rl-fast agent (no "
                             f"{FORMAT} metadata; make one with `sam2rl-fast export AGENT.zip`)")
    return meta


class OnnxPolicy(VectorPolicy):
    """An exported agent (`.onnx`) as a `MemoryPolicy`, run by onnxruntime.

    Args:
        path: a file written by `export_agent`.
        providers: onnxruntime execution providers (default: CUDA when onnxruntime-gpu and
            a GPU are usable, else the CPU); `self.provider` is the one the session uses.
        threads: onnxruntime intra-op threads (default 1: the network is tiny, and one
            thread has the lowest latency at the batch sizes a tracker uses).
    Raises FileNotFoundError for a missing file, `AgentFileError` for a corrupt one or an
    ONNX model without sam2rl-fast metadata, `ObservationLayoutError` (at `reset`) for a
    tracker whose observation layout or bank size differs, and (at `check_model`) for a
    SAM 2 model other than the one the agent was trained with.
    """

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = 1):
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        self.metadata = read_metadata(self.path)
        m = self.metadata
        try:
            capacity, size, n_act = int(m["capacity"]), int(m["obs_size"]), int(m["num_actions"])
            self.meta = {"layout": m["layout"], "capacity": capacity, "obs_size": size,
                         "num_actions": n_act, "model": json.loads(m["model"]),
                         "training": json.loads(m["training"])}
        except (ValueError, TypeError) as e:
            raise AgentFileError(f"{self.path}: unreadable sam2rl-fast metadata: {e}") from e
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # a CUDA fallback is reported through self.provider
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session, self.provider = open_session(self.path, opts, providers, AgentFileError)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != list(OUTPUT_NAMES):
            raise AgentFileError(f"{self.path}: graph inputs {[i.name for i in inputs]} / outputs "
                                 f"{[o.name for o in outputs]}, expected {[INPUT_NAME]} / "
                                 f"{list(OUTPUT_NAMES)}")
        graph_size, graph_act = inputs[0].shape[-1], outputs[1].shape[-1]
        if graph_size != size or graph_act != n_act:
            raise AgentFileError(f"{self.path}: the graph takes {graph_size} features and scores "
                                 f"{graph_act} actions, its metadata says {size} / {n_act}")
        # The file's own layout must be this version's (the tracker's bank size is checked
        # at reset, when it is known).
        check_layout(self.meta["layout"], capacity, capacity, size, who=str(self.path))
        self.obs_size, self.num_actions = size, n_act
        self._run = self.session.run
        self._action_only = [OUTPUT_NAMES[0]]
        self._both = list(OUTPUT_NAMES)
        self._buffers: dict[int, np.ndarray] = {}
        super().__init__(self._predict, capacity, self.meta["layout"], name=self.path.stem)
        log.info("%s", self)

    def __repr__(self):
        return (f"OnnxPolicy({str(self.path)!r}, capacity={self.agent_capacity}, "
                f"provider={self.provider})")

    def _input(self, obs) -> np.ndarray:
        """obs as a C-contiguous float32 [B, obs_size] array (no copy when it already is)."""
        x = obs
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
                and x.flags.c_contiguous):
            x = np.asarray(x)
            if x.ndim == 1:
                x = x.reshape(1, -1)
            if x.ndim != 2:
                raise ValueError(f"{self.name}: observations must be [batch, {self.obs_size}], "
                                 f"got shape {x.shape}")
            buf = self._buffers.get(x.shape[0])
            if buf is None or buf.shape != x.shape:
                buf = self._buffers[x.shape[0]] = np.empty(x.shape, np.float32)
            np.copyto(buf, x, casting="unsafe")
            x = buf
        if x.shape[1] != self.obs_size:
            raise ValueError(f"{self.name}: observations must have {self.obs_size} features "
                             f"(layout {self.layout}, {self.agent_capacity} slots), got {x.shape[1]}")
        return x

    def _predict(self, obs) -> np.ndarray:
        return self._run(self._action_only, {INPUT_NAME: self._input(obs)})[0]

    def act(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """(actions [B] int64, probs [B, num_actions] float32) of observations [B, obs_size]."""
        action, probs = self._run(self._both, {INPUT_NAME: self._input(obs)})
        return action, probs

    def check_model(self, model) -> None:
        check_model(self.meta, model, str(self.path))


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
