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
