"""Faster fp32 `nn.Linear` on CPUs through oneDNN's prepacked weights.

ATen's fp32 linear calls MKL, which runs its AVX2 code on AMD CPUs; oneDNN picks AVX-512
where present and works on a weight reordered once for its kernels. On the 2-core EPYC
this project is developed on that is 1.8-2.9x faster for the shapes of SAM 2's Hiera trunk,
mask decoder and memory encoder, with the same fp32 arithmetic (a different summation
order: differences of a few ulps). Under bf16 autocast on the CPU the same layers run on a
bf16 copy of the weight, reordered once (AVX512-BF16 / AMX kernels where the CPU has them):
autocast itself would cast the weight on every call (2.7x the packed fp32 linear, 1.25x
autocast's own, for the memory attention's MLP on one Zen 4 core). The ops are private ATen
ops that torch.compile's CPU backend uses; if a torch lacks them or they disagree with
`F.linear`, nothing changes.

    with packed_linears(model):   # every nn.Linear inside, for the duration
        model(x)
"""

from __future__ import annotations

import contextlib
import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

from sam2rl_fast.model.values_key import values_key


@functools.cache
def onednn_linear_available() -> bool:
    """Whether oneDNN's prepacked linear ops exist here and agree with `F.linear`."""
    try:
        with torch.autocast("cpu", enabled=False):  # the first call may come under autocast
            return _check_fp32()
    except Exception:  # an older / newer torch without these ops
        return False


def _check_fp32() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g) for s in ((5, 16), (8, 16), (8,)))
    pw = torch.ops.mkldnn._reorder_linear_weight(w, None)
    y = torch.ops.mkldnn._linear_pointwise(x, pw, b, "relu", [], "")
    return bool(torch.allclose(y, F.relu(F.linear(x, w, b)), rtol=1e-5, atol=1e-5))


@functools.cache
def onednn_bf16_linear_available() -> bool:
    """Whether oneDNN's prepacked linear runs bf16 here (the CPU has bf16 kernels) and agrees."""
    try:
        if not (onednn_linear_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((5, 32), (8, 32), (8,)))
        with torch.autocast("cpu", enabled=False):
            pw = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), None)
            y = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), pw, b.bfloat16(), "none", [], "")
            ref = F.linear(x, w, b)
        return y.dtype == torch.bfloat16 and bool(torch.allclose(y.float(), ref, rtol=3e-2, atol=3e-2))
    except Exception:
        return False


class PackedWeight:
    """A Linear's weight reordered for oneDNN, per dtype (fp32, or a bf16 copy with its bias
    cast too), re-packed whenever the weight or bias changes (in-place updates bump their
    version; `.to()` / `load_state_dict` change their storage)."""

    def __init__(self):
        self.keys, self.packed = {}, {}  # dtype -> (key, (packed weight, bias in dtype))

    def get(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the packed weight, the bias) in `dtype`."""
        key = values_key(weight, bias)
        if self.keys.get(dtype) != key:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), None)
            self.packed[dtype] = (packed, None if bias is None else bias.detach().to(dtype))
            self.keys[dtype] = key
        return self.packed[dtype]


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  cache: PackedWeight, activation: str = "none") -> torch.Tensor:
    """`F.linear` (then `activation`: "none" | "relu") through oneDNN when x and the weight are
    CPU float32 and no gradient is needed (under bf16 autocast: in bf16 on the weight's
    packed bf16 copy, as autocast would compute it); plain `F.linear` otherwise."""
    if (x.device.type == "cpu" and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and x.is_floating_point() and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and onednn_linear_available() and x.numel() > 0):
        dtype = None  # what oneDNN computes in: autocast's bf16, or fp32 without autocast
        if torch.is_autocast_enabled("cpu"):
            if torch.get_autocast_dtype("cpu") == torch.bfloat16 and onednn_bf16_linear_available():
                dtype = torch.bfloat16
        elif x.dtype == torch.float32:
            dtype = torch.float32
        if dtype is not None:
            w, b = cache.get(weight, bias, dtype)
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]).to(dtype), w, b, activation, [], "")
            return y.view(*x.shape[:-1], y.shape[-1])
    y = F.linear(x, weight, bias)
    return F.relu(y) if activation == "relu" else y


def _forward(self, x):
    return packed_linear(x, self.weight, self.bias, self._sam2rl_packed)


@contextlib.contextmanager
def packed_linears(module: nn.Module, enabled: bool = True):
    """Run every `nn.Linear` of `module` through oneDNN while the context is open.

    The modules are not replaced (their weights, state dict and hooks stay as they are);
    only their `forward` is overridden per instance and restored on exit.
    """
    if not enabled or not onednn_linear_available():
        yield
        return
    patched = []
    for m in module.modules():
        if type(m) is nn.Linear and "forward" not in m.__dict__:
            m._sam2rl_packed = PackedWeight()
            m.forward = types.MethodType(_forward, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward, m._sam2rl_packed
