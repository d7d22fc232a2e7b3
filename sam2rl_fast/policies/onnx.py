"""An exported agent (`.onnx`, `sam2rl-fast export`) as a memory policy, run by onnxruntime
alone: deploying it needs neither torch's training stack nor stable-baselines3."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sam2rl_fast.runtime.onnx_session import open_session
from sam2rl_fast.policies.agent_file import (
    INPUT_NAME,
    OUTPUT_NAMES,
    AgentFileError,
    check_model,
    read_onnx_metadata,
)
from sam2rl_fast.policies.base import check_layout
from sam2rl_fast.policies.learned import VectorPolicy

log = logging.getLogger(__name__)


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
        self.metadata = read_onnx_metadata(self.path)
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
