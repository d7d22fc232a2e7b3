"""oneDNN prepacked Linear: same results as nn.Linear, re-packs on weight changes, restores."""

import pytest
import torch
from torch import nn

from sam2rl_fast.model.cpu_linear import onednn_linear_available, packed_linears
from tests.helpers import rel_err

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN linear in this torch")


def test_packed_linears_match_and_restore():
    net = nn.Sequential(nn.Linear(96, 288), nn.GELU(), nn.Linear(288, 96, bias=False))
    x = torch.randn(3, 517, 96)  # rows not a multiple of any block
    with torch.no_grad():
        ref = net(x)
        with packed_linears(net):
            out = net(x)
            assert all("forward" in m.__dict__ for m in net if isinstance(m, nn.Linear))
            net[0].weight.mul_(2)  # an in-place update must be seen (re-pack)
            ref2 = nn.functional.linear(net[1](nn.functional.linear(x, net[0].weight, net[0].bias)),
                                        net[2].weight)
            out2 = net(x)
        assert not any("forward" in m.__dict__ for m in net)
    assert rel_err(out, ref) <= 1e-6 and rel_err(out2, ref2) <= 1e-6


def test_gradients_fall_back_to_aten():
    lin = nn.Linear(8, 4)
    x = torch.randn(5, 8, requires_grad=True)
    with packed_linears(lin):
        lin(x).sum().backward()  # oneDNN's op has no autograd: the override must step aside
    assert x.grad is not None and lin.weight.grad is not None


def test_inference_tensors_as_weights():
    with torch.inference_mode():  # weights made here have no version counter
        lin = nn.Linear(16, 8)
        w = lin.weight * 2
        x = torch.randn(4, 16)
        from sam2rl_fast.model.cpu_linear import PackedWeight, packed_linear

        y = packed_linear(x, w, lin.bias, PackedWeight())
        assert rel_err(y, nn.functional.linear(x, w, lin.bias)) <= 1e-6


def test_availability_checked_outside_autocast():
    """The first call may come under bf16 autocast (FastTracker(precision="bf16")): the
    check itself must not run under it (it once cached False for the whole process)."""
    from sam2rl_fast.model import cpu_linear

    cpu_linear.onednn_linear_available.cache_clear()
    cpu_linear.onednn_bf16_linear_available.cache_clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_linear.onednn_linear_available()
        cpu_linear.onednn_bf16_linear_available()


def test_under_bf16_autocast_the_packed_copy_is_bf16():
    from sam2rl_fast.model.cpu_linear import onednn_bf16_linear_available

    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 32))
    x = torch.randn(5, 77, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x)  # autocast's own bf16 linears
        with packed_linears(net):
            out = net(x)
            net[2].bias.add_(1.0)  # a changed bias is seen (the bf16 copy is re-made)
            out2 = net(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert rel_err(out.float(), ref.float()) <= 1e-2
    assert rel_err(out2.float(), ref.float() + 1) <= 1e-2
    if onednn_bf16_linear_available():  # the packed path ran, not a silent fallback
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(net), \
                torch.profiler.profile() as prof:
            net(x)
        assert any(e.key == "mkldnn::_linear_pointwise" for e in prof.key_averages())
