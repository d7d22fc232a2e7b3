"""MemoryBank + StockMemoryRule without sam2 in the loop: bounds, batching, errors."""

import pytest
import torch

from sam2rl_fast import (
    MemoryBank,
    MemoryEncodings,
    MemorySelection,
    StockMemoryRule,
    build_info,
)


def encodings(hw=16, C=64):
    return MemoryEncodings(torch.randn(hw, C), torch.randn(7, C), torch.randn(C), model=None)


def track(bank, rule, frames, cond_frame=0, reverse=False, num_frames=None):
    """Drive the bank through a video with the stock rule, with random memories."""
    B, side = bank.num_objects, int(bank.num_tokens**0.5)
    enc = encodings(bank.num_tokens)
    for f in frames:
        is_cond = f == cond_frame
        if not is_cond:
            memory, _, _ = bank.gather(rule.select(bank, f, num_frames, reverse), enc)
            assert memory.shape[0] <= 7 * bank.num_tokens + 4 * 16
        slots, ptr_slots = rule.assign(bank, f, is_cond=is_cond, reverse=reverse)
        bank.append(torch.randn(B, 64, side, side), slots, frame_idx=f, is_cond=is_cond,
                    obj_score=torch.randn(B), iou=torch.rand(B))
        bank.append_ptr(torch.randn(B, 256), ptr_slots, frame_idx=f, is_cond=is_cond)


def test_memory_is_bounded_by_capacity_whatever_the_length():
    bank = MemoryBank(2, 16)
    before = bank.nbytes
    track(bank, StockMemoryRule(), range(300))
    assert bank.nbytes == before
    assert sorted(bank.frame_idx[0].tolist()) == [0, 294, 295, 296, 297, 298, 299]
    assert bank.slot_map(0, cond=True) == {0: 0}
    assert sorted(bank.ptr_map(0, cond=False)) == list(range(285, 300))


def test_stride_keeps_exactly_what_will_be_read():
    rule = StockMemoryRule(stride=3)
    bank = MemoryBank(1, 16)
    track(bank, rule, range(40))
    stored = set(bank.slot_map(0, cond=False))
    assert {f for _, f in rule.recent_frames(40)} <= stored | {0}


def test_reverse_tracking_selects_future_frames():
    bank = MemoryBank(1, 16)
    track(bank, StockMemoryRule(), range(20, 9, -1), cond_frame=20, reverse=True, num_frames=21)
    sel = StockMemoryRule().select(bank, 9, 21, reverse=True)
    frames = [int(bank.frame_idx[0, s]) for s in sel.slots[0]]
    assert frames == [20, 15, 14, 13, 12, 11, 10] and sel.tslots[0] == [6, 5, 4, 3, 2, 1, 0]
    ptr_frames = [int(bank.ptr_frame[0, r]) for r in sel.ptr_slots[0]]
    # sam2: (f - t) * -1 in reverse for the prompt, t_diff for the others
    assert ptr_frames == [20, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert sel.ptr_dists[0] == [11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_batched_gather_equals_per_object_gathers():
    B = 3
    bank = MemoryBank(B, 16, dtype=torch.float32)
    track(bank, StockMemoryRule(), range(10))
    enc = encodings()
    sel = StockMemoryRule().select(bank, 10)
    memory, pos, n = bank.gather(sel, enc)
    for b in range(B):
        one = MemoryBank(1, 16, dtype=torch.float32)
        one.feats.copy_(bank.feats[b:b + 1])
        one.ptrs.copy_(bank.ptrs[b:b + 1])
        sel_b = MemorySelection(sel.slots[b:b + 1], sel.tslots[b:b + 1], sel.ptr_slots[b:b + 1],
                                sel.ptr_dists[b:b + 1], sel.max_ptrs)
        m_b, p_b, n_b = one.gather(sel_b, enc)
        assert torch.equal(memory[:, b:b + 1], m_b) and torch.equal(pos[:, b:b + 1], p_b)


@pytest.mark.parametrize("objects", [None, [2, 0, 1], [1, 1]])
def test_gather_varlen_equals_per_object_gathers(objects):
    B = 3
    bank = MemoryBank(B, 16, dtype=torch.float32)
    track(bank, StockMemoryRule(), range(10))
    enc = encodings()
    sel = StockMemoryRule().select(bank, 10)
    sel.slots[1], sel.tslots[1] = sel.slots[1][:3], sel.tslots[1][:3]  # ragged: 3 memories
    sel.ptr_slots[2], sel.ptr_dists[2] = sel.ptr_slots[2][:5], sel.ptr_dists[2][:5]  # 5 pointers
    memory, pos, cu = bank.gather_varlen(sel, enc, objects)
    objs = list(range(B)) if objects is None else objects
    assert len(cu) == len(objs) + 1 and cu[-1] == memory.shape[0] == pos.shape[0]
    for lane, b in enumerate(objs):
        one = MemoryBank(1, 16, dtype=torch.float32)
        one.feats.copy_(bank.feats[b:b + 1])
        one.ptrs.copy_(bank.ptrs[b:b + 1])
        sel_b = MemorySelection(sel.slots[b:b + 1], sel.tslots[b:b + 1], sel.ptr_slots[b:b + 1],
                                sel.ptr_dists[b:b + 1], sel.max_ptrs)
        m_b, p_b, _ = one.gather(sel_b, enc)
        assert torch.equal(memory[cu[lane]:cu[lane + 1]], m_b[:, 0])
        assert torch.equal(pos[cu[lane]:cu[lane + 1]], p_b[:, 0])


def test_gather_varlen_bad_input():
    bank = MemoryBank(2, 16)
    track(bank, StockMemoryRule(), range(3))
    sel = StockMemoryRule().select(bank, 3)
    with pytest.raises(IndexError, match=r"objects \[0, 2\] outside \[0, 1\]"):
        bank.gather_varlen(sel, encodings(), [0, 2])
    sel.tslots[0] = sel.tslots[0][:-1]
    with pytest.raises(ValueError, match="object 0 has 3 slots and 2 tslots"):
        bank.gather_varlen(sel, encodings())
    sel.tslots[0], sel.slots[1] = sel.tslots[0] + [0], [0, 1, 7]
    with pytest.raises(IndexError, match=r"slots \[.*7\] outside \[0, 6\]"):
        bank.gather_varlen(sel, encodings())


def test_full_bank_is_a_clear_error():
    bank = MemoryBank(1, 16, capacity=2)
    rule = StockMemoryRule()
    track(bank, rule, [0, 1], cond_frame=0)
    bank.is_cond[0, 1] = True  # both slots pinned
    with pytest.raises(RuntimeError, match="MemoryBank is full"):
        rule.assign(bank, 5, is_cond=True)


def test_select_without_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="no conditioning memory"):
        StockMemoryRule().select(MemoryBank(1, 16), 3)


def test_gathering_unequal_counts_at_once_is_rejected():
    sel = MemorySelection([[0, 1], [0]], [[6, 0], [6]], [[0], [0]], [[1], [1]], 16)  # valid
    with pytest.raises(ValueError, match="different numbers of slots"):
        sel.index_tensors(MemoryBank(2, 16))


@pytest.mark.parametrize("call,match,exc", [
    (lambda b: b.append(torch.randn(2, 64, 4, 4), [0, 7], frame_idx=1, obj_score=torch.ones(2)),
     r"out of range \[-1, 6\]", IndexError),
    (lambda b: b.append(torch.randn(2, 64, 4, 4), [0, 1, 2], frame_idx=1, obj_score=torch.ones(2)),
     "one slot per object", ValueError),
    (lambda b: b.append(torch.randn(2, 64, 5, 5), [0, 1], frame_idx=1, obj_score=torch.ones(2)),
     "does not fit a bank", RuntimeError),
    (lambda b: b.append_ptr(torch.randn(2, 128), [0, 1], frame_idx=1),
     r"obj_ptr must be \[2, 256\]", ValueError),
])
def test_bank_bad_input(call, match, exc):
    with pytest.raises(exc, match=match):
        call(MemoryBank(2, 16))


def test_bank_rejects_bad_construction():
    with pytest.raises(ValueError, match="dtype must be"):
        MemoryBank(1, 16, dtype=torch.int8)
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        MemoryBank(1, 16, capacity=0)


def test_build_info_reports_the_build():
    info = build_info()
    assert info["extension_loaded"], info["extension_error"]
    assert info["built_torch_version"] == info["torch_version"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    if info["cuda_kernels"]:
        assert info["cuda_archs"] and info["nvcc_version"]
        assert torch._C._dispatch_has_kernel_for_dispatch_key("sam2rl_fast::memory_gather", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("sam2rl_fast::memory_gather", "CPU")


def test_torch_version_mismatch_is_reported_clearly(monkeypatch):
    import sam2rl_fast._build_config as cfg

    from sam2rl_fast import _extension

    monkeypatch.setattr(cfg, "TORCH_VERSION", "0.0.0-other")
    monkeypatch.setattr(_extension, "_C", None)
    _extension._load()
    msg = _extension._LOAD_ERROR
    monkeypatch.setattr(_extension, "_LOAD_ERROR", msg)
    assert "built against torch 0.0.0-other" in msg and "--no-build-isolation" in msg
    with pytest.raises(_extension.ExtensionError, match="built against torch 0.0.0-other"):
        _extension.require_extension()
