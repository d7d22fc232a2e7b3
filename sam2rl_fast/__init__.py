"""sam2rl-fast: fast SAM 2 video tracking with learned memory control.

Data flows one way: video -> features -> memory bank -> memory attention -> SAM heads
-> memory encoder -> policy -> memory bank.

Public names load on first use (PEP 562), so that `import sam2rl_fast` and
`sam2rl_fast.build_info()` work, and say what is missing, even where sam2 is not installed.
"""

from __future__ import annotations

import importlib

from sam2rl_fast._version import __version__  # noqa: F401
from sam2rl_fast._extension import ExtensionError, build_info  # noqa: E402

_LAZY = {
    "MemoryBank": "sam2rl_fast.memory.bank",
    "MemoryEncodings": "sam2rl_fast.model.encodings",
    "MemorySelection": "sam2rl_fast.memory.selection",
    "StockMemoryRule": "sam2rl_fast.memory.selection",
    "MemoryObservation": "sam2rl_fast.policies",
    "MemoryPolicy": "sam2rl_fast.policies",
    "FastTracker": "sam2rl_fast.tracking.tracker",
    "TrackingResult": "sam2rl_fast.tracking.tracker",
    "accelerate": "sam2rl_fast.model.accelerate",
    "FastMemoryAttention": "sam2rl_fast.model.memory_attention",
}

__all__ = ["ExtensionError", "build_info", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sam2rl_fast' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "sam2":
            raise ImportError(
                f"sam2rl_fast.{name} needs Meta's sam2 package, which is not importable here "
                "(install it with: SAM2_BUILD_CUDA=0 pip install --no-build-isolation "
                "sam2==1.1.0)") from e
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
