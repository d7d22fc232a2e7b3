"""sam2rl-fast: fast SAM 2 video tracking with learned memory control.

Data flows one way: video -> features -> memory bank -> memory attention -> SAM heads
-> memory encoder -> policy -> memory bank.
"""

__version__ = "0.1.0"

from sam2rl_fast._extension import ExtensionError, build_info  # noqa: E402
from sam2rl_fast.memory_bank import MemoryBank  # noqa: E402
from sam2rl_fast.memory_encodings import MemoryEncodings  # noqa: E402
from sam2rl_fast.selection import MemorySelection, StockMemoryRule  # noqa: E402
from sam2rl_fast.policies import MemoryObservation, MemoryPolicy  # noqa: E402
from sam2rl_fast.tracker import FastTracker, TrackingResult  # noqa: E402

__all__ = [
    "ExtensionError",
    "FastTracker",
    "MemoryBank",
    "MemoryEncodings",
    "MemoryObservation",
    "MemoryPolicy",
    "MemorySelection",
    "StockMemoryRule",
    "TrackingResult",
    "build_info",
]

from sam2rl_fast.accelerate import accelerate  # noqa: E402
from sam2rl_fast.memory_attention import FastMemoryAttention  # noqa: E402

__all__ += ["FastMemoryAttention", "accelerate"]
