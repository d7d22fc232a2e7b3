"""Run an exported memory-control agent with onnxruntime and numpy only (no torch, no sam2rl-fast).

    python export/run_onnx_policy.py agent.onnx                  # random observations
    python export/run_onnx_policy.py agent.onnx --obs obs.npy    # [N, obs_size] float32
    python export/run_onnx_policy.py agent.onnx --obs obs.npy --save out.npz

The file's metadata says what the agent expects (observation layout, bank size); the
caller builds observation vectors in that layout (docs/memory-policy.md) and maps each
action back to the bank: 0 = do not store the new memory, k = store it in slot k-1
(never over a prompted slot). See docs/deployment.md.
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort

FORMAT = "sam2rl-fast-agent-onnx/1"
LAYOUT = "sam2rl-fast/memory-obs/v1"  # the observation layout this caller produces


class OnnxAgent:
    """obs [B, obs_size] float32 -> (actions [B] int64, probs [B, num_actions] float32)."""

    def __init__(self, path, capacity=None, providers=None):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # tiny network: one thread is fastest at small batches
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                  if p in available]
        # onnxruntime-gpu lists CUDA even where its libraries are missing, logs an error and
        # falls back to the CPU: keep that quiet, self.provider says where it runs.
        ort.set_default_logger_severity(4)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # ort raises its own types for missing/corrupt files
            raise ValueError(f"onnxruntime cannot load {path}: {e}") from e
        finally:
            ort.set_default_logger_severity(2)
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a sam2rl-fast agent (no {FORMAT} metadata)")
        if meta["layout"] != LAYOUT:
            raise ValueError(f"{path} expects observation layout {meta['layout']}, we produce {LAYOUT}")
        self.capacity = int(meta["capacity"])
        if capacity is not None and capacity != self.capacity:
            raise ValueError(f"{path} was trained for {self.capacity} slots, the bank has {capacity}")
        self.obs_size, self.num_actions = int(meta["obs_size"]), int(meta["num_actions"])
        self.model = json.loads(meta["model"])  # the SAM 2 model signature it was trained with
        self.training = json.loads(meta["training"])

    def __call__(self, obs):
        obs = np.ascontiguousarray(obs, dtype=np.float32).reshape(-1, self.obs_size)
        action, probs = self.session.run(["action", "probs"], {"obs": obs})
        return action, probs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("agent", help="an .onnx agent (sam2rl-fast export AGENT.zip -o agent.onnx)")
    ap.add_argument("--obs", help=".npy file of observations [N, obs_size] (default: random ones)")
    ap.add_argument("--batch", type=int, default=4, help="random observations to make (no --obs)")
    ap.add_argument("--save", help="write actions and probs to this .npz")
    args = ap.parse_args(argv)
    try:
        agent = OnnxAgent(args.agent)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.agent}: {agent.capacity} slots, obs_size {agent.obs_size}, "
          f"{agent.num_actions} actions, provider {agent.provider}, "
          f"trained {agent.training.get('timesteps', '?')} steps on {agent.training.get('videos', '?')}")
    if args.obs:
        obs = np.load(args.obs)
    else:
        obs = np.random.default_rng(0).uniform(0, 1, (args.batch, agent.obs_size)).astype(np.float32)
    t0 = time.perf_counter()
    action, probs = agent(obs)
    ms = (time.perf_counter() - t0) * 1e3
    print(f"{len(action)} decisions in {ms:.2f} ms")
    for i in range(min(len(action), 8)):
        where = "drop the candidate" if action[i] == 0 else f"store in slot {action[i] - 1}"
        print(f"  obs {i}: action {action[i]} ({where}), p = {probs[i, action[i]]:.3f}")
    if args.save:
        np.savez(args.save, action=action, probs=probs)
        print(f"wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
