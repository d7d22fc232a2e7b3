"""What every ONNX file sam2rl-fast runs needs: clear load errors, and an onnxruntime
session on the best provider that says where it runs.

Used by `policies.onnx` (agents), `policies.agent_file` (their metadata) and
`export.memory_attention_runtime` (the memory-attention step).
"""

from __future__ import annotations

import warnings
from pathlib import Path


def load_proto(path: Path, what: str, error: type[Exception]):
    """The ModelProto at `path`; FileNotFoundError when missing, `error` when not ONNX."""
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends all mean "not an ONNX file"
        raise error(f"{path} is not a readable ONNX model: {e}") from e


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime has it and a CUDA device works, then the CPU."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda:  # onnxruntime-gpu lists CUDA even without a driver; ask torch whether one works
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            pass
    return (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]


def open_session(path: Path, opts, providers: list[str] | None, error: type[Exception]):
    """(session, provider it runs on): `providers` (default `default_providers()`), falling
    back to the CPU with a warning when they fail; `error` when even the CPU cannot load it."""
    import onnxruntime as ort

    providers = list(providers or default_providers())
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:
        if providers == ["CPUExecutionProvider"]:
            raise error(f"onnxruntime cannot load {path}: {e}") from e
        warnings.warn(f"onnxruntime providers {providers} failed ({e}); using the CPU")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    provider = session.get_providers()[0]
    if provider != providers[0]:
        warnings.warn(f"onnxruntime could not use {providers[0]}; running on {provider}")
    return session, provider
