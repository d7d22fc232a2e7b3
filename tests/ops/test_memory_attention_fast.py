"""FastMemoryAttention against stock sam2 MemoryAttention (random-weight tiny models)."""

import copy

import pytest
import torch

from sam2rl_fast import FastMemoryAttention
from tests.helpers import (
    build_random_predictor,
    memory_attention_inputs,
    rel_err,
    sharpened,
)

CONFIGS = ["sam2.1", "sam2"]


@pytest.fixture(scope="module")
def stock():
    return {(cfg, size): build_random_predictor(cfg, size).memory_attention.eval()
            for cfg in CONFIGS for size in (256, 512)}


def run_both(module, inputs, n_ptr):
    fast = FastMemoryAttention.from_sam2(module)
    with torch.no_grad():
        out = fast(*inputs, num_obj_ptr_tokens=n_ptr)
        ref = module(*inputs, num_obj_ptr_tokens=n_ptr)
    return out, ref


CASES = [(1, 0), (4, 8), (7, 64)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("n_mem,n_ptr", CASES)
def test_matches_stock_256(stock, cfg, B, n_mem, n_ptr):
    out, ref = run_both(stock[cfg, 256], memory_attention_inputs(16, B, n_mem, n_ptr), n_ptr)
    assert out.shape == ref.shape == (256, B, 256)
    assert rel_err(out, ref) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("B,n_mem,n_ptr", [(1, 1, 0), (3, 4, 8), (1, 7, 64), (3, 7, 64)])
def test_matches_stock_512(stock, cfg, B, n_mem, n_ptr):
    out, ref = run_both(stock[cfg, 512], memory_attention_inputs(32, B, n_mem, n_ptr), n_ptr)
    assert rel_err(out, ref) <= 1e-4


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("side,B,n_mem,n_ptr", [(16, 2, 3, 16), (12, 3, 2, 64), (5, 1, 7, 4)])
def test_sharpened_vs_fp64_stock(stock, cfg, side, B, n_mem, n_ptr):
    # Peaky, dominant cross-attention; the fp64 stock module is the reference, and the
    # grid sides 12 and 5 leave partial query tiles and key blocks in the kernel.
    module = sharpened(stock[cfg, 256])
    inputs = memory_attention_inputs(side, B, n_mem, n_ptr)
    fast = FastMemoryAttention.from_sam2(module)
    with torch.no_grad():
        out = fast(*inputs, num_obj_ptr_tokens=n_ptr)
        ref = copy.deepcopy(module).double()(*[t.double() for t in inputs], num_obj_ptr_tokens=n_ptr)
        # The pointer tokens must move the output far above the tolerance, or errors in
        # their handling (they carry no RoPE) could hide below it.
        k = n_mem * side * side
        moved = list(inputs)
        moved[3] = inputs[3].clone()
        moved[3][k:] = inputs[3][k:].roll(4, 0) if n_ptr > 4 else -inputs[3][k:]
        other = fast(*moved, num_obj_ptr_tokens=n_ptr)
    assert rel_err(out, ref) <= 1e-4
    assert rel_err(other, ref) > 1e-3


def test_list_inputs_and_state_dict(stock):
    module = stock["sam2.1", 256]
    fast = FastMemoryAttention.from_sam2(module)
    assert list(fast.state_dict()) == list(module.state_dict())
    curr, memory, curr_pos, memory_pos = memory_attention_inputs(16, 1, 2, 8)
    with torch.no_grad():
        out = fast(curr=[curr], memory=memory, curr_pos=[curr_pos], memory_pos=memory_pos,
                   num_obj_ptr_tokens=8)
        ref = module(curr, memory, curr_pos, memory_pos, 8)
    assert rel_err(out, ref) <= 1e-4


def test_merged_weights_follow_weight_changes(stock):
    module = copy.deepcopy(stock["sam2", 256])
    fast = FastMemoryAttention.from_sam2(module)
    inputs = memory_attention_inputs(16, 1, 2, 8)
    with torch.no_grad():
        before = fast(*inputs, num_obj_ptr_tokens=8)
        fast.load_state_dict(build_random_predictor("sam2", 256, seed=1).memory_attention.state_dict())
        out = fast(*inputs, num_obj_ptr_tokens=8)
        ref = module(*inputs, num_obj_ptr_tokens=8)
    assert rel_err(out, ref) <= 1e-4 and rel_err(before, ref) > 1e-3


def test_composite_path_float64(stock):
    # Not float32 on the CPU: the torch composite path (the one CUDA uses) runs instead of
    # the fused op. Stock keeps its RoPE in complex64 even for float64 modules, which
    # limits the agreement to ~1e-6; a wrong composite would be off by > 1e-3.
    module = sharpened(stock["sam2.1", 256]).double()
    inputs = memory_attention_inputs(16, 2, 3, 8, dtype=torch.float64)
    out, ref = run_both(module, inputs, 8)
    assert out.dtype == torch.float64 and rel_err(out, ref) <= 1e-5


def test_grad_and_training_use_stock_forward(stock):
    module = copy.deepcopy(stock["sam2.1", 256])
    fast = FastMemoryAttention.from_sam2(module)
    curr, memory, curr_pos, memory_pos = memory_attention_inputs(16, 1, 1, 4)
    curr.requires_grad_(True)
    out = fast(curr, memory, curr_pos, memory_pos, 4)
    out.square().sum().backward()
    assert curr.grad is not None and torch.isfinite(curr.grad).all()
    assert module.layers[0].cross_attn_image.k_proj.weight.grad is not None
    fast.train()
    torch.manual_seed(0)
    a = fast(curr, memory, curr_pos, memory_pos, 4)  # dropout, as stock
    torch.manual_seed(0)
    b = module.train()(curr, memory, curr_pos, memory_pos, 4)
    assert torch.equal(a, b)


def bad(kind):
    curr, memory, curr_pos, memory_pos = memory_attention_inputs(16, 2, 2, 8)
    n_ptr = 8
    if kind == "grid":
        curr, curr_pos = curr[:250], curr_pos[:250]
    elif kind == "frames":
        memory, memory_pos = memory[4:], memory_pos[4:]
    elif kind == "ptr4":
        n_ptr = 6
    elif kind == "ptrM":
        n_ptr = memory.shape[0] + 4
    elif kind == "mem_dim":
        memory, memory_pos = memory.repeat(1, 1, 2), memory_pos.repeat(1, 1, 2)
    elif kind == "batch":
        memory, memory_pos = memory[:, :1], memory_pos[:, :1]
    elif kind == "pos":
        curr_pos = curr_pos[:, :1]
    elif kind == "empty":
        memory, memory_pos, n_ptr = memory[:0], memory_pos[:0], 0
    elif kind == "dtype":
        memory = memory.double()
    elif kind == "device":
        memory = memory.to("meta")
    return (curr, memory, curr_pos, memory_pos), n_ptr


@pytest.mark.parametrize("kind,exc,match", [
    ("grid", ValueError, "square grid"),
    ("frames", ValueError, "whole number of memory frames"),
    ("ptr4", ValueError, "multiple of 4"),
    ("ptrM", ValueError, "multiple of 4.*M="),
    ("mem_dim", ValueError, "memory must be"),
    ("batch", ValueError, "memory must be"),
    ("pos", ValueError, "curr_pos"),
    ("empty", ValueError, "memory is empty"),
    ("dtype", TypeError, "share a dtype"),
    ("device", ValueError, "one device"),
])
def test_bad_inputs(stock, kind, exc, match):
    fast = FastMemoryAttention.from_sam2(stock["sam2.1", 256])
    inputs, n_ptr = bad(kind)
    with torch.no_grad(), pytest.raises(exc, match=match):
        fast(*inputs, num_obj_ptr_tokens=n_ptr)


def test_from_sam2_rejects_other_modules():
    with pytest.raises(TypeError, match="MemoryAttention"):
        FastMemoryAttention.from_sam2(torch.nn.Linear(4, 4))


@pytest.mark.cuda
@pytest.mark.parametrize("n_mem,n_ptr", [(1, 0), (7, 64)])
def test_cuda_fp32_matches_stock(stock, n_mem, n_ptr):
    module = sharpened(stock["sam2.1", 512]).cuda()
    inputs = memory_attention_inputs(32, 2, n_mem, n_ptr, device="cuda")
    out, ref = run_both(module, inputs, n_ptr)
    ref64 = copy.deepcopy(module).double()(*[t.double() for t in inputs], num_obj_ptr_tokens=n_ptr)
    assert out.is_cuda and rel_err(out, ref64) <= 1e-4 and rel_err(ref, ref64) <= 1e-4


def autocast_errors(module, inputs, n_ptr, device):
    """Errors of ours and of stock under bf16 autocast, both against an fp64 stock."""
    fast = FastMemoryAttention.from_sam2(module)
    with torch.no_grad():
        ref = copy.deepcopy(module).double()(*[t.double() for t in inputs], num_obj_ptr_tokens=n_ptr)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = fast(*inputs, num_obj_ptr_tokens=n_ptr)
            stock_bf16 = module(*inputs, num_obj_ptr_tokens=n_ptr)
    return rel_err(out.float(), ref), rel_err(stock_bf16.float(), ref)


@pytest.mark.cuda
def test_cuda_autocast_bf16(stock):
    module = copy.deepcopy(stock["sam2.1", 512]).cuda()
    err, stock_err = autocast_errors(module, memory_attention_inputs(32, 2, 7, 64, device="cuda"), 64, "cuda")
    # flash-attention's rule: at most 2x PyTorch's own low-precision error.
    assert err <= 2 * max(stock_err, 1e-3), (err, stock_err)


@pytest.mark.slow
@pytest.mark.parametrize("side,n_mem,n_ptr", [(16, 3, 8), (32, 7, 64)])
def test_cpu_autocast_bf16_uses_the_bf16_op(stock, side, n_mem, n_ptr):
    # Under bf16 autocast the op runs on bf16 q, k, v (fp32 accumulation), the projections
    # as autocast runs them: within flash-attention's 2x of stock's own bf16 error.
    size = 256 if side == 16 else 512
    err, stock_err = autocast_errors(stock["sam2.1", size], memory_attention_inputs(side, 2, n_mem, n_ptr),
                                     n_ptr, "cpu")
    assert 1e-6 < err <= 2 * max(stock_err, 1e-3), (err, stock_err)  # > 1e-6: really bf16
