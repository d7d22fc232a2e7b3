"""memory_gather_varlen: packed ragged gathers against the reference and per-object memory_gather."""

import pytest
import torch

from sam2rl_fast.ops import memory_gather, memory_gather_varlen
from sam2rl_fast.ops.memory_bank import gather_out_dtype
from sam2rl_fast.ops.reference import memory_gather_varlen_ref

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# (N_l, P_l) per sequence: 1..7 memories, 0..16 pointers, an empty sequence, a lone one.
LAYOUTS = [
    [(7, 16), (1, 0), (4, 3)],
    [(3, 1)],
    [(2, 5), (0, 0), (5, 2), (2, 5)],
    [(1, 0), (1, 0)],  # no pointers at all: memory keeps the bank dtype
]


def varlen_inputs(layout, B=None, S=8, side=5, C=64, D=256, R=16, T=7, dtype=torch.bfloat16,
                  device="cpu", cu_dtype=torch.int64, permute=False):
    """Random bank contents and a packed ragged selection; sequence l reads object objects[l]."""
    L = len(layout)
    B = B or L
    HW = side * side
    bank = torch.randn(B, S, HW, C).to(dtype)
    spos, tpos = torch.randn(HW, C), torch.randn(T, C)
    ptrs = torch.randn(B, R, D)
    slots = torch.cat([torch.randperm(S)[:n] for n, _ in layout])
    tslots = torch.randint(0, T, (len(slots),))
    ptr_idx = torch.cat([torch.randperm(R)[:p] for _, p in layout])
    ptr_pos = torch.randn(len(ptr_idx), C)
    cu_mems = torch.tensor([0] + [n for n, _ in layout]).cumsum(0).to(cu_dtype)
    cu_ptrs = torch.tensor([0] + [p for _, p in layout]).cumsum(0).to(cu_dtype)
    objects = torch.randint(0, B, (L,)) if permute else None
    t = [bank, spos, tpos, slots, tslots, cu_mems, ptrs, ptr_idx, ptr_pos, cu_ptrs, objects]
    return [None if x is None else x.to(device) for x in t]


def poison_allocator(rows, C, device):
    """Fill freed memory with NaN so that an output row the kernel forgets shows as NaN."""
    for dt in (torch.float32, torch.bfloat16):
        torch.full((max(rows, 1), C), float("nan"), dtype=dt, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bank_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cu_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("permute", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_varlen_matches_reference_and_memory_gather(device, bank_dtype, cu_dtype, permute, layout):
    args = varlen_inputs(layout, B=len(layout) + int(permute), dtype=bank_dtype, device=device,
                         cu_dtype=cu_dtype, permute=permute)
    bank, spos, tpos, slots, tslots, cu_mems, ptrs, ptr_idx, ptr_pos, cu_ptrs, objects = args
    out_dtype = gather_out_dtype(bank, ptrs, len(ptr_idx))
    split = ptrs.shape[2] // bank.shape[3]
    rows = len(slots) * bank.shape[2] + len(ptr_idx) * split
    poison_allocator(rows, bank.shape[3], device)
    memory, memory_pos, cu_seqlens = memory_gather_varlen(*args[:10], objects=objects)
    assert memory.shape == memory_pos.shape == (rows, 64)
    assert memory.dtype == out_dtype and memory_pos.dtype == torch.float32
    assert cu_seqlens.dtype == cu_dtype and cu_seqlens.device == bank.device
    assert not memory.float().isnan().any() and not memory_pos.isnan().any()
    ref = memory_gather_varlen_ref(*args[:10], objects, out_dtype)
    assert torch.equal(memory, ref[0]) and torch.equal(memory_pos, ref[1])  # copies: exact
    assert torch.equal(cu_seqlens, ref[2])
    # Rows of sequence l = the existing op on that object alone.
    cm, cp, cs = cu_mems.tolist(), cu_ptrs.tolist(), cu_seqlens.tolist()
    for lane in range(len(layout)):
        b = lane if objects is None else int(objects[lane])
        m, p = slice(cm[lane], cm[lane + 1]), slice(cp[lane], cp[lane + 1])
        one, one_pos, _ = memory_gather(bank[b:b + 1], spos, tpos, slots[None, m], tslots[None, m],
                                        ptrs[b:b + 1], ptr_idx[None, p], ptr_pos[None, p],
                                        out_dtype=out_dtype)
        assert torch.equal(memory[cs[lane]:cs[lane + 1]], one[:, 0])
        assert torch.equal(memory_pos[cs[lane]:cs[lane + 1]], one_pos[:, 0])


@pytest.mark.parametrize("device", DEVICES)
def test_equal_sequences_side_by_side_are_memory_attentions_input(device):
    """n adjacent sequences of one length: a [n, M, C] block whose transpose is memory_gather's
    [M, n, C] output for those objects, without a copy."""
    args = varlen_inputs([(3, 2), (3, 2), (3, 2)], B=4, device=device, permute=True)
    bank, spos, tpos, slots, tslots, cu_mems, ptrs, ptr_idx, ptr_pos, cu_ptrs, objects = args
    memory, memory_pos, _ = memory_gather_varlen(*args[:10], objects=objects)
    block = memory.view(3, -1, 64).transpose(0, 1)
    assert block.data_ptr() == memory.data_ptr()
    ref, ref_pos, _ = memory_gather(bank[objects], spos, tpos, slots.view(3, 3), tslots.view(3, 3),
                                    ptrs[objects], ptr_idx.view(3, 2), ptr_pos.view(3, 2, 64))
    assert torch.equal(block, ref) and torch.equal(memory_pos.view(3, -1, 64).transpose(0, 1), ref_pos)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    args = varlen_inputs([(2, 3), (4, 1)], device=device)
    nc = list(args)
    nc[1] = args[1].t().contiguous().t()  # same values, transposed strides
    nc[3] = torch.stack([args[3], args[3]], -1)[:, 0]  # a strided view
    nc[5] = torch.stack([args[5], args[5]], -1)[:, 0]
    out = memory_gather_varlen(*nc[:10])
    ref = memory_gather_varlen(*args[:10])
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cu_dtype,permute", [(torch.int64, False), (torch.int32, True)])
def test_opcheck(device, cu_dtype, permute):
    args = varlen_inputs([(2, 3), (1, 0), (3, 1)], B=3, device=device, cu_dtype=cu_dtype,
                         permute=permute)
    op = torch.ops.sam2rl_fast.memory_gather_varlen.default
    torch.library.opcheck(op, (*args[:3], args[10], *args[3:10], torch.float32))


def test_torch_compile_fullgraph():
    args = varlen_inputs([(2, 3), (3, 1)])

    def f(*a):
        memory, memory_pos, cu = memory_gather_varlen(*a)
        return memory.float() * 2, memory_pos + 1, cu

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(*args[:10])
    ref = f(*args[:10])
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


# ----------------------------------------------------------------------------- bad input
NAMES = ["bank", "spatial_pos", "temporal_pos", "slots", "tslots", "cu_mems", "ptrs", "ptr_idx",
         "ptr_pos", "cu_ptrs", "objects"]


def _args(**over):
    args = dict(zip(NAMES, varlen_inputs([(2, 1), (1, 2)], B=2, S=4, side=4, permute=True)))
    args.update(over)
    return args


@pytest.mark.parametrize("over,match", [
    (dict(objects=torch.tensor([0, 2])), r"objects holds values in \[0, 2\]"),
    (dict(objects=torch.tensor([0, 1, 1])), r"cu_mems must be \[L \+ 1\] = \[4\]"),
    (dict(objects=torch.tensor([0, 1], dtype=torch.int32)), "objects must be int64"),
    (dict(slots=torch.tensor([0, 1, 4])), r"slots holds values in \[0, 4\]"),
    (dict(slots=torch.tensor([[0, 1, 2]])), r"slots must be \[Nt\]"),
    (dict(tslots=torch.tensor([0, 7, 1])), "tslots holds values"),
    (dict(ptr_idx=torch.tensor([0, 16, 1])), "ptr_idx holds values"),
    (dict(ptr_pos=torch.randn(2, 64)), r"ptr_pos must be \[Pt, C\] = \[3, 64\]"),
    (dict(cu_mems=torch.tensor([1, 2, 3])), "cu_mems must start at 0"),
    (dict(cu_mems=torch.tensor([0, 3, 2])), r"cu_mems must be non-decreasing, got cu_mems\[2\] = 2"),
    (dict(cu_mems=torch.tensor([0, 2, 2])), r"cu_mems must end at len\(slots\) = 3, got 2"),
    (dict(cu_ptrs=torch.tensor([0, 1, 4])), r"cu_ptrs must end at len\(ptr_idx\) = 3"),
    (dict(cu_ptrs=torch.tensor([0, 1, 3], dtype=torch.int32)), "cu_ptrs must have the dtype of cu_mems"),
    (dict(cu_mems=torch.tensor([0.0, 2, 3]), cu_ptrs=torch.tensor([0.0, 1, 3])), "int32 or int64"),
    (dict(objects=torch.zeros(0, dtype=torch.long), cu_mems=torch.zeros(1, dtype=torch.long),
          cu_ptrs=torch.zeros(1, dtype=torch.long)), r"no sequences \(L = 0\)"),
    (dict(ptrs=torch.randn(2, 16, 100)), "must be a multiple of mem_dim"),
    (dict(temporal_pos=torch.randn(7, 64, dtype=torch.float64)), "must be float32"),
])
def test_bad_input(over, match):
    with pytest.raises(RuntimeError, match=match):
        memory_gather_varlen(**_args(**over))


@pytest.mark.cuda
def test_wrong_device_is_a_clear_error():
    args = {k: v if k == "cu_ptrs" else v.cuda() for k, v in _args().items()}
    with pytest.raises(RuntimeError, match="cu_ptrs is on cpu but the bank is on cuda"):
        memory_gather_varlen(**args)


@pytest.mark.cuda
@pytest.mark.parametrize("over,exc,match", [
    (dict(slots=torch.tensor([0, 9, 1])), IndexError, "slots holds values"),
    (dict(objects=torch.tensor([0, 5])), IndexError, "objects holds values"),
    (dict(cu_mems=torch.tensor([0, 3, 2])), ValueError, "cu_mems must be non-decreasing"),
])
def test_cuda_bad_values_are_rejected_or_poisoned(over, exc, match):
    args = {k: v.cuda() for k, v in _args(**over).items()}
    with pytest.raises(exc, match=match):
        memory_gather_varlen(**args)
    # Unvalidated, the kernel reads nothing out of bounds and marks what it could not read.
    memory, memory_pos, _ = memory_gather_varlen(**args, validate=False)
    assert memory.float().isnan().any() and memory_pos.isnan().any()
