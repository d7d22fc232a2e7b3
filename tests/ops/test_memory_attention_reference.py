"""The real-arithmetic memory-attention reference equals stock sam2's MemoryAttention."""

import pytest
import torch

from tests.helpers import build_random_predictor, memory_attention_ref, rel_err


@pytest.fixture(scope="module", params=["sam2.1", "sam2"])
def stock_modules(request):
    return {size: build_random_predictor(request.param, size).memory_attention.eval()
            for size in (256, 512)}


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("n_mem,n_ptr", [(1, 0), (4, 8), (7, 64)])
@pytest.mark.parametrize("pv_shortcut", [False, True])
@torch.no_grad()
def test_reference_matches_stock(stock_modules, size, B, n_mem, n_ptr, pv_shortcut):
    module = stock_modules[size]
    side = size // 16
    Nq = side * side
    curr, curr_pos = torch.randn(Nq, B, 256), torch.randn(Nq, B, 256)
    memory = torch.randn(n_mem * Nq + n_ptr, B, 64)
    memory_pos = torch.randn(n_mem * Nq + n_ptr, B, 64)
    ref = module(curr=curr, memory=memory, curr_pos=curr_pos, memory_pos=memory_pos,
                 num_obj_ptr_tokens=n_ptr)
    out = memory_attention_ref(module, curr, memory, curr_pos, memory_pos, n_ptr, pv_shortcut)
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-4


def test_non_square_grid_is_rejected(stock_modules):
    with pytest.raises(ValueError, match="square grid"):
        memory_attention_ref(stock_modules[256], torch.randn(250, 1, 256), torch.randn(250, 1, 64),
                             torch.randn(250, 1, 256), torch.randn(250, 1, 64))
