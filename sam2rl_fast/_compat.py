"""Old module paths (before the package was laid out by stage) keep working, with one
DeprecationWarning each: `import sam2rl_fast.model_loading` gives `sam2rl_fast.model.loading`."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "model_loading": "model.loading",
    "memory_encodings": "model.encodings",
    "sam_heads": "model.sam_heads",
    "memory_attention": "model.memory_attention",
    "cpu_linear": "model.cpu_linear",
    "demo_model": "model.bundled",
    "accelerate": "model.accelerate",
    "memory_bank": "memory.bank",
    "selection": "memory.selection",
    "observation": "policies.observation",
    "video": "tracking.video",
    "tracking_step": "tracking.step",
    "tracker": "tracking.tracker",
    "onnx_common": "export.onnx_common",
    "onnx_agent": "export.agent",
    "onnx_memory_attention": "export.memory_attention",
    "metrics": "eval.metrics",
    "evaluation": "eval.evaluation",
    "overlay": "eval.overlay",
    "demo": "eval.demo",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head == "sam2rl_fast" and tail in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = "sam2rl_fast." + MOVED[spec.name.partition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}; the old path will go", DeprecationWarning,
                      stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        sys.modules[module.__spec__.name] = module  # the old name is the same module object


def install():
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
