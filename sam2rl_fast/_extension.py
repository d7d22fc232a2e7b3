"""Loading the compiled extension `sam2rl_fast._C`, and what it was built with.

The extension links against libtorch's C++ ABI, which changes between torch
releases: a package built against one torch and imported with another fails with an
undefined symbol. We compare versions first and say what to do instead.
"""

from __future__ import annotations

import importlib

import torch

from sam2rl_fast._version import __version__

_C = None
_LOAD_ERROR: str | None = None


class ExtensionError(ImportError):
    """The compiled extension is missing or does not match the installed torch."""


def _rebuild_hint() -> str:
    return (
        "Rebuild it against the installed torch with "
        "`pip install --no-build-isolation --no-cache-dir --force-reinstall --no-deps .` "
        "from the sam2rl-fast source tree."
    )


def _load():
    global _C, _LOAD_ERROR
    try:
        from sam2rl_fast import _build_config as cfg
    except ImportError:
        _LOAD_ERROR = (
            "sam2rl_fast was imported from a source tree without its compiled extension "
            "(sam2rl_fast/_build_config.py is missing). Install the package with "
            "`pip install --no-build-isolation .` (or `-e .`)."
        )
        return
    if cfg.TORCH_VERSION != torch.__version__:
        _LOAD_ERROR = (
            f"sam2rl_fast's compiled extension was built against torch {cfg.TORCH_VERSION}, "
            f"but torch {torch.__version__} is installed; its C++ ABI differs. {_rebuild_hint()}"
        )
        return
    try:
        _C = importlib.import_module("sam2rl_fast._C")
    except ImportError as e:  # e.g. undefined symbol: a torch rebuilt under the same version
        _LOAD_ERROR = f"sam2rl_fast's compiled extension failed to load ({e}). {_rebuild_hint()}"


_load()


def require_extension():
    """Return the loaded `_C` module or raise an `ExtensionError` that says why not."""
    if _C is None:
        raise ExtensionError(_LOAD_ERROR)
    return _C


def build_info() -> dict:
    """What the installed extension was built with, and whether a GPU is usable now.

    Returns a dict with: ``version``, ``torch_version`` (installed), ``built_torch_version``,
    ``torch_cuda_version``, ``extension_loaded`` (and ``extension_error``),
    ``cuda_kernels`` (whether CUDA kernels were compiled), ``cuda_archs``,
    ``nvcc_version``, ``cuda_available`` (a usable GPU now), ``gpus`` and ``sam2_version``
    (and ``sam2_error`` when sam2 cannot be imported).
    """
    try:
        from sam2rl_fast import _build_config as cfg
    except ImportError:
        cfg = None
    cuda_available = torch.cuda.is_available()
    try:
        from importlib.metadata import version

        import sam2  # noqa: F401

        sam2_version, sam2_error = version("sam2"), None
    except Exception as e:  # not installed, or broken: say so instead of failing
        sam2_version, sam2_error = None, f"{type(e).__name__}: {e}"
    return {
        "version": __version__,
        "torch_version": torch.__version__,
        "built_torch_version": cfg.TORCH_VERSION if cfg else None,
        "torch_cuda_version": torch.version.cuda,
        "extension_loaded": _C is not None,
        "extension_error": _LOAD_ERROR,
        "cuda_kernels": bool(cfg and cfg.WITH_CUDA and _C is not None and _C.with_cuda),
        "cuda_archs": [a for a in cfg.CUDA_ARCHS.split(";") if a] if cfg else [],
        "nvcc_version": (cfg.NVCC_VERSION or None) if cfg else None,
        "cxx_compiler": cfg.CXX_COMPILER if cfg else None,
        "cuda_available": cuda_available,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda_available
        else [],
        "sam2_version": sam2_version,
        "sam2_error": sam2_error,
    }
