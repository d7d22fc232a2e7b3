"""memory_append / memory_gather against their pure-PyTorch references, on CPU and CUDA."""

import pytest
import torch

from sam2rl_fast.ops import memory_append, memory_gather
from sam2rl_fast.ops.memory_bank import gather_out_dtype
from sam2rl_fast.ops.reference import memory_append_ref, memory_gather_ref
from tests.helpers import random_bank_inputs

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = [torch.bfloat16, torch.float32, torch.float16]
# (B, S, side, N, P): odd sizes that break 32-wide tiles, 1..7 memories, 0..16 pointers.
SHAPES = [(1, 7, 16, 7, 16), (3, 7, 8, 1, 0), (2, 9, 5, 4, 3), (4, 3, 33, 3, 1)]


def poison(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bank_dtype", DTYPES)
@pytest.mark.parametrize("mem_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,S,side,N,P", SHAPES)
@pytest.mark.parametrize("with_embed", [True, False])
def test_append_matches_reference(device, bank_dtype, mem_dtype, B, S, side, N, P, with_embed):
    C = 64
    mem = torch.randn(B, C, side, side, device=device).to(mem_dtype)
    if B > 1:  # non-contiguous input: a channels-last view
        mem = mem.contiguous(memory_format=torch.channels_last)
    slots = torch.randint(-1, S, (B,), device=device)
    score = torch.randn(B, device=device)  # both signs: no_obj_embed added or not
    embed = torch.randn(C, device=device) if with_embed else None
    bank = poison(torch.empty(B, S, side * side, C, dtype=bank_dtype, device=device))
    ref = bank.clone()
    memory_append(bank, mem, slots, score, embed)
    memory_append_ref(ref, mem, slots, score, embed)
    # Written slots are exact (one rounding in both); untouched ones keep their NaN.
    assert torch.equal(bank.nan_to_num(7.0), ref.nan_to_num(7.0))
    for b in range(B):
        if slots[b] >= 0:
            assert not bank[b, slots[b]].isnan().any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bank_dtype", DTYPES)
@pytest.mark.parametrize("B,S,side,N,P", SHAPES)
def test_gather_matches_reference(device, bank_dtype, B, S, side, N, P):
    args = random_bank_inputs(B=B, S=S, side=side, N=N, P=P, dtype=bank_dtype, device=device)
    out_dtype = gather_out_dtype(args[0], args[5], P)
    memory, memory_pos, n_ptr = memory_gather(*args)
    ref_memory, ref_pos = memory_gather_ref(*args, out_dtype=out_dtype)
    assert n_ptr == 4 * P
    assert memory.dtype == ref_memory.dtype and memory.shape == (N * side * side + 4 * P, B, 64)
    assert torch.equal(memory, ref_memory)  # a copy: exact
    assert torch.equal(memory_pos, ref_pos)  # one fp32 add: exact


@pytest.mark.parametrize("device", DEVICES)
def test_gather_non_contiguous_inputs(device):
    bank, spos, tpos, slots, tslots, ptrs, ptr_idx, ptr_pos = random_bank_inputs(device=device)
    spos_nc = spos.t().contiguous().t()  # same values, transposed strides
    slots_nc = torch.stack([slots, slots], -1)[..., 0]
    out = memory_gather(bank, spos_nc, tpos, slots_nc, tslots, ptrs, ptr_idx, ptr_pos)
    ref = memory_gather_ref(bank, spos, tpos, slots, tslots, ptrs, ptr_idx, ptr_pos,
                            out_dtype=out[0].dtype)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    args = random_bank_inputs(B=2, S=4, side=6, N=3, P=2, device=device)
    torch.library.opcheck(torch.ops.sam2rl_fast.memory_gather.default,
                          (*args, torch.float32))
    bank = args[0].clone()
    mem = torch.randn(2, 64, 6, 6, device=device)
    torch.library.opcheck(
        torch.ops.sam2rl_fast.memory_append.default,
        (bank, mem, torch.tensor([0, 3], device=device), torch.randn(2, device=device),
         torch.randn(64, device=device)))


def test_torch_compile_fullgraph():
    args = random_bank_inputs(B=2, S=4, side=6, N=3, P=2)
    bank = args[0].clone()
    mem = torch.randn(2, 64, 6, 6)
    slots = torch.tensor([1, 2])
    score = torch.randn(2)

    def step(bank, mem, *gather_args):
        memory_append(bank, mem, slots, score, None)
        return memory_gather(bank, *gather_args)[:2]

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    bank_ref = bank.clone()
    out = compiled(bank, mem, *args[1:])
    ref = step(bank_ref, mem, *args[1:])
    assert torch.equal(bank, bank_ref)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


# ----------------------------------------------------------------------------- bad input
def _gather_args(**over):
    args = dict(zip(["bank", "spatial_pos", "temporal_pos", "slots", "tslots", "ptrs", "ptr_idx",
                     "ptr_pos"], random_bank_inputs(B=2, S=4, side=4, N=3, P=2)))
    args.update(over)
    return args


@pytest.mark.parametrize("over,match", [
    (dict(bank=torch.randn(4, 16, 64)), r"bank must be \[B, S, HW, C\]"),
    (dict(bank=torch.randint(0, 3, (2, 4, 16, 64))), "bank dtype"),
    (dict(spatial_pos=torch.randn(15, 64)), r"spatial_pos must be \[HW, C\]"),
    (dict(slots=torch.tensor([[0, 1, 4], [0, 1, 2]])), r"slots holds values in \[0, 4\]"),
    (dict(slots=torch.tensor([[0, 1, -1], [0, 1, 2]])), "slots holds values"),
    (dict(slots=torch.zeros(2, 3, dtype=torch.int32)), "slots must be int64"),
    (dict(tslots=torch.full((2, 3), 7)), "tslots holds values"),
    (dict(ptr_idx=torch.full((2, 2), 16)), "ptr_idx holds values"),
    (dict(ptrs=torch.randn(2, 16, 100)), "must be a multiple of mem_dim"),
    (dict(ptr_pos=torch.randn(2, 3, 64)), r"ptr_pos must be \[B, P, C\]"),
    (dict(temporal_pos=torch.randn(7, 64, dtype=torch.float64)), "must be float32"),
])
def test_gather_bad_input(over, match):
    with pytest.raises(RuntimeError, match=match):
        memory_gather(**_gather_args(**over))


@pytest.mark.parametrize("over,match", [
    (dict(mem=torch.randn(2, 64, 5, 4)), "does not fit a bank"),
    (dict(mem=torch.randn(2, 32, 4, 4)), "does not fit a bank"),
    (dict(slots=torch.tensor([0, 4])), r"slots holds values in \[0, 4\]"),
    (dict(slots=torch.tensor([0])), r"slots must be \[B\]"),
    (dict(obj_score=torch.randn(2, dtype=torch.float64)), "obj_score must be float32"),
    (dict(no_obj_embed=torch.randn(32)), "no_obj_embed must hold C = 64"),
])
def test_append_bad_input(over, match):
    args = dict(bank=torch.empty(2, 4, 16, 64, dtype=torch.bfloat16), mem=torch.randn(2, 64, 4, 4),
                slots=torch.tensor([0, 1]), obj_score=torch.randn(2), no_obj_embed=None)
    args.update(over)
    with pytest.raises(RuntimeError, match=match):
        memory_append(**args)


@pytest.mark.cuda
def test_wrong_device_is_a_clear_error():
    args = _gather_args()
    args["bank"] = args["bank"].cuda()
    with pytest.raises(RuntimeError, match="is on cpu but the bank is on cuda"):
        memory_gather(**args)


@pytest.mark.cuda
def test_cuda_out_of_range_index_is_rejected():
    args = {k: v.cuda() for k, v in _gather_args().items()}
    args["slots"][0, 0] = 9
    with pytest.raises(IndexError, match="slots holds values"):
        memory_gather(**args)
