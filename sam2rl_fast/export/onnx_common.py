"""What the ONNX writers of sam2rl-fast share: a quiet exporter. The load and session
helpers live in `sam2rl_fast.runtime.onnx_session` (policies run ONNX files too) and are
re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

from sam2rl_fast.runtime.onnx_session import (  # noqa: F401 - re-exported
    default_providers,
    load_proto,
    open_session,
)


@contextlib.contextmanager
def quiet_exporter():
    """Silence torch.onnx's exporter (its loggers and warnings) for the block."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
