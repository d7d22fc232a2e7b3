"""Running an exported memory attention (`sam2rl-fast export-memory-attention`) in
onnxruntime: `OnnxMemoryAttention(path)(curr, memory, curr_pos, memory_pos, n_ptr)`, with
the graph's input contract checked first. The graph's names and meanings live here, so the
writer (`sam2rl_fast.export.memory_attention`) and the runner share them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sam2rl_fast.runtime.onnx_session import load_proto, open_session

INPUT_NAMES = ("curr", "memory", "curr_pos", "memory_pos", "num_obj_ptr_tokens")
OUTPUT_NAMES = ("pix_feat_with_mem",)
INPUT_MEANINGS = {
    "curr": "[Nq, B, d] float32: current frame's image features (Nq = grid*grid tokens, "
            "row-major y*grid + x)",
    "memory": "[M, B, C] float32: spatial memories of F frames (F*Nq tokens, frame by frame), "
              "then num_obj_ptr_tokens object-pointer tokens",
    "curr_pos": "[Nq, B, d] float32: sine position encoding of curr",
    "memory_pos": "[M, B, C] float32: position (+ temporal) encoding of memory",
    "num_obj_ptr_tokens": "int64 scalar: trailing memory tokens that are object pointers "
                          "(not rotated); a multiple of d/C, 0 <= it <= M",
}
OUTPUT_MEANINGS = {"pix_feat_with_mem": "[Nq, B, d] float32: curr conditioned on memory"}


class OnnxMemoryAttentionError(ValueError):
    """An ONNX memory-attention file or input that cannot be used."""


def read_metadata(path) -> dict:
    """metadata_props of an exported file, as a dict of strings."""
    return {p.key: p.value for p in _load_proto(path).metadata_props}


def _load_proto(path):
    return load_proto(Path(path).expanduser(), "ONNX memory attention", OnnxMemoryAttentionError)


class OnnxMemoryAttention:
    """Runs an exported memory attention in onnxruntime.

    `providers` defaults to CUDA when onnxruntime offers it, else the CPU; `self.provider`
    says which one the session actually uses (onnxruntime falls back to the CPU when the
    CUDA libraries are missing); `threads` sets onnxruntime's intra-op threads. Call with numpy arrays or torch tensors, as
    `MemoryAttention.forward`; returns a float32 numpy array `[Nq, B, d]`.
    """

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        self.metadata = {p.key: p.value for p in _load_proto(self.path).metadata_props}
        need = ("grid", "d_model", "mem_dim", "tokens_per_obj_ptr")
        if self.metadata.get("producer") != "sam2rl_fast.export.memory_attention" or any(
                k not in self.metadata for k in need):
            raise OnnxMemoryAttentionError(f"{self.path} is an ONNX model but not a memory "
                                           "attention exported by sam2rl_fast")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the CUDA fallback is reported through self.provider
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session, self.provider = open_session(self.path, opts, providers, OnnxMemoryAttentionError)
        self.grid = int(self.metadata["grid"])
        self.d_model = int(self.metadata["d_model"])
        self.mem_dim = int(self.metadata["mem_dim"])
        self.tokens_per_ptr = int(self.metadata["tokens_per_obj_ptr"])
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise OnnxMemoryAttentionError(f"{self.path}: inputs {names}, expected "
                                           f"{list(INPUT_NAMES)}")

    def __repr__(self):
        return (f"OnnxMemoryAttention({str(self.path)!r}, grid={self.grid}, "
                f"provider={self.provider})")

    def check_inputs(self, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens) -> None:
        """Raise OnnxMemoryAttentionError for inputs the graph would mis-compute."""
        Nq, d, C = self.grid ** 2, self.d_model, self.mem_dim
        for name, t in (("curr", curr), ("memory", memory), ("curr_pos", curr_pos),
                        ("memory_pos", memory_pos)):
            if len(t.shape) != 3:
                raise OnnxMemoryAttentionError(f"{name} must be 3-D (sequence-first), got shape "
                                               f"{tuple(t.shape)}")
        if tuple(curr.shape[::2]) != (Nq, d):
            side = math.isqrt(curr.shape[0])
            grid = "" if side * side == curr.shape[0] else " (not even a square grid)"
            raise OnnxMemoryAttentionError(
                f"curr must be [{Nq}, B, {d}] (this file was exported for a {self.grid}x"
                f"{self.grid} grid), got {tuple(curr.shape)}{grid}")
        B, M = curr.shape[1], memory.shape[0]
        if tuple(curr_pos.shape) != tuple(curr.shape):
            raise OnnxMemoryAttentionError(f"curr_pos {tuple(curr_pos.shape)} must match curr "
                                           f"{tuple(curr.shape)}")
        if tuple(memory.shape[1:]) != (B, C) or M == 0:
            raise OnnxMemoryAttentionError(f"memory must be [M>0, {B}, {C}] (batch of curr, "
                                           f"memory dim of the model), got {tuple(memory.shape)}")
        if tuple(memory_pos.shape) != tuple(memory.shape):
            raise OnnxMemoryAttentionError(f"memory_pos {tuple(memory_pos.shape)} must match "
                                           f"memory {tuple(memory.shape)}")
        n = int(num_obj_ptr_tokens)
        if n != num_obj_ptr_tokens or n < 0 or n > M or n % self.tokens_per_ptr:
            raise OnnxMemoryAttentionError(
                f"num_obj_ptr_tokens={num_obj_ptr_tokens} must be a multiple of "
                f"{self.tokens_per_ptr} (tokens per object pointer) in [0, M={M}]")
        if (M - n) % Nq:
            raise OnnxMemoryAttentionError(f"the {M - n} spatial memory tokens are not a whole "
                                           f"number of memory frames of {Nq} tokens")

    def __call__(self, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens: int = 0):
        arrays = [_as_float32(t) for t in (curr, memory, curr_pos, memory_pos)]
        self.check_inputs(*arrays, num_obj_ptr_tokens)
        feed = dict(zip(INPUT_NAMES, arrays + [np.array(int(num_obj_ptr_tokens), np.int64)]))
        return self.session.run(list(OUTPUT_NAMES), feed)[0]


def _as_float32(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor (torch is not needed to run the file)
        t = t.detach().cpu().float().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)
