"""sam2rl-fast: fast SAM 2 video tracking with learned memory control.

Data flows one way: video -> features -> memory bank -> memory attention -> SAM heads
-> memory encoder -> policy -> memory bank.
"""

__version__ = "0.1.0"

from sam2rl_fast._extension import ExtensionError, build_info  # noqa: E402
from sam2rl_fast.memory_bank import MemoryBank  # noqa: E402
from sam2rl_fast.memory_encodings import MemoryEncodings  # noqa: E402
from sam2rl_fast.selection import MemorySelection, StockMemoryRule  # noqa: E402

__all__ = [
    "ExtensionError",
    "MemoryBank",
    "MemoryEncodings",
    "MemorySelection",
    "StockMemoryRule",
    "build_info",
]
