"""Memory-bank ops: `memory_append`, `memory_gather` and `memory_gather_varlen` (schemas in
csrc/registration.cpp).

Shapes: B objects, S slots, HW tokens per memory, C = mem_dim (64), D = pointer dim (256),
R pointer slots, N gathered memories, P gathered pointers, M = N*HW + P*(D//C). The
variable-length gather packs L sequences: Nt memories and Pt pointers in all, with
offsets `cu_mems`, `cu_ptrs` [L+1] and output rows `cu_seqlens` [L+1].
"""

from __future__ import annotations

import torch

from sam2rl_fast._extension import _C, require_extension


def memory_append(
    bank: torch.Tensor,  # [B, S, HW, C], written in place
    mem: torch.Tensor,  # [B, C, H, W]
    slots: torch.Tensor,  # [B] int64, -1 = do not store
    obj_score: torch.Tensor,  # [B] float32 object-score logits
    no_obj_embed: torch.Tensor | None = None,  # [C] float32 (SAM 2.1) or None (SAM 2.0)
) -> None:
    """Write newly encoded memories into bank slots, token-major, in the bank's dtype.

    The value stored is ``mem + (obj_score <= 0) * no_obj_embed`` computed in float32 and
    rounded once to the bank dtype, exactly as sam2's ``_encode_new_memory`` followed by
    the video predictor's cast to bfloat16.
    """
    require_extension()
    torch.ops.sam2rl_fast.memory_append(bank, mem, slots, obj_score, no_obj_embed)


def gather_out_dtype(bank: torch.Tensor, ptrs: torch.Tensor, num_ptrs: int) -> torch.dtype:
    """The dtype of sam2's concatenated `memory`: `torch.cat` promotes bf16 maps with fp32 pointers."""
    return torch.promote_types(bank.dtype, ptrs.dtype) if num_ptrs > 0 else bank.dtype


def memory_gather(
    bank: torch.Tensor,  # [B, S, HW, C]
    spatial_pos: torch.Tensor,  # [HW, C] float32
    temporal_pos: torch.Tensor,  # [T, C] float32
    slots: torch.Tensor,  # [B, N] int64
    tslots: torch.Tensor,  # [B, N] int64 temporal-position index of each memory
    ptrs: torch.Tensor,  # [B, R, D]
    ptr_idx: torch.Tensor,  # [B, P] int64
    ptr_pos: torch.Tensor,  # [B, P, C] float32
    out_dtype: torch.dtype | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Build memory attention's `memory` and `memory_pos` ([M, B, C]) in one pass.

    Rows are the N memories' tokens (memory-major, in the given order) followed by the
    P pointers, each split into D // C tokens, as sam2's
    ``_prepare_memory_conditioned_features`` concatenates them.

    Returns:
        ``(memory, memory_pos, num_obj_ptr_tokens)``; ``memory`` has ``out_dtype``
        (default: what ``torch.cat`` in sam2 would give), ``memory_pos`` float32.
    """
    require_extension()
    if out_dtype is None:
        out_dtype = gather_out_dtype(bank, ptrs, ptr_idx.shape[-1])
    if validate and bank.is_cuda:
        # The CPU kernel checks ranges itself; on the GPU an out-of-range index would only
        # show as NaN, so check here (one synchronisation).
        _check_index_range(slots, bank.shape[1], "slots")
        _check_index_range(tslots, temporal_pos.shape[0], "tslots")
        _check_index_range(ptr_idx, ptrs.shape[1], "ptr_idx")
    memory, memory_pos = torch.ops.sam2rl_fast.memory_gather(
        bank, spatial_pos, temporal_pos, slots, tslots, ptrs, ptr_idx, ptr_pos, out_dtype
    )
    num_obj_ptr_tokens = ptr_idx.shape[-1] * (ptrs.shape[-1] // bank.shape[-1])
    return memory, memory_pos, num_obj_ptr_tokens


def memory_gather_varlen(
    bank: torch.Tensor,  # [B, S, HW, C]
    spatial_pos: torch.Tensor,  # [HW, C] float32
    temporal_pos: torch.Tensor,  # [T, C] float32
    slots: torch.Tensor,  # [Nt] int64: every sequence's memory slots, packed
    tslots: torch.Tensor,  # [Nt] int64: their temporal-position indices
    cu_mems: torch.Tensor,  # [L+1] int32/int64 offsets into slots
    ptrs: torch.Tensor,  # [B, R, D]
    ptr_idx: torch.Tensor,  # [Pt] int64: every sequence's pointer slots, packed
    ptr_pos: torch.Tensor,  # [Pt, C] float32
    cu_ptrs: torch.Tensor,  # [L+1] offsets into ptr_idx (dtype of cu_mems)
    objects: torch.Tensor | None = None,  # [L] int64 bank row per sequence (None: L = B, row l)
    out_dtype: torch.dtype | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`memory_gather` for sequences of different lengths, packed without padding.

    Sequence l reads bank row ``objects[l]``, memories ``slots[cu_mems[l]:cu_mems[l+1]]`` and
    pointers ``ptr_idx[cu_ptrs[l]:cu_ptrs[l+1]]``; its rows ``cu_seqlens[l]:cu_seqlens[l+1]``
    of the outputs equal ``memory_gather`` of that object alone (``[M_l, 1, C]``): its
    memories' tokens, then its pointers' tokens. Sequences of equal length that lie next to
    each other form a ``[n, M_l, C]`` block, which ``.transpose(0, 1)`` turns into memory
    attention's ``[M_l, n, C]`` without a copy.

    Returns:
        ``(memory [Nt*HW + Pt*(D//C), C], memory_pos [same] float32, cu_seqlens [L+1])``;
        ``memory`` has ``out_dtype`` (default: ``torch.cat``'s promotion when there are
        pointers), ``cu_seqlens`` the dtype of ``cu_mems``.
    """
    require_extension()
    if out_dtype is None:
        out_dtype = gather_out_dtype(bank, ptrs, ptr_idx.numel())
    if validate and bank.is_cuda:  # the CPU kernel checks values itself (see memory_gather)
        if objects is not None:
            _check_index_range(objects, bank.shape[0], "objects")
        _check_index_range(slots, bank.shape[1], "slots")
        _check_index_range(tslots, temporal_pos.shape[0], "tslots")
        _check_index_range(ptr_idx, ptrs.shape[1], "ptr_idx")
        _check_offsets(cu_mems, slots.numel(), "cu_mems", "slots")
        _check_offsets(cu_ptrs, ptr_idx.numel(), "cu_ptrs", "ptr_idx")
    return torch.ops.sam2rl_fast.memory_gather_varlen(
        bank, spatial_pos, temporal_pos, objects, slots, tslots, cu_mems, ptrs, ptr_idx,
        ptr_pos, cu_ptrs, out_dtype)


def _check_offsets(cu: torch.Tensor, total: int, name: str, packed: str) -> None:
    if cu.dim() != 1 or cu.numel() == 0 or cu.dtype not in (torch.int32, torch.int64):
        return  # the op's own shape and dtype checks name it
    v = cu.cpu().tolist()
    if v[0] != 0:
        raise ValueError(f"sam2rl_fast: {name} must start at 0, got {v[0]}")
    bad = [i for i in range(1, len(v)) if v[i] < v[i - 1]]
    if bad:
        raise ValueError(f"sam2rl_fast: {name} must be non-decreasing, got {name}[{bad[0]}] = "
                         f"{v[bad[0]]} < {name}[{bad[0] - 1}] = {v[bad[0] - 1]}")
    if v[-1] != total:
        raise ValueError(f"sam2rl_fast: {name} must end at len({packed}) = {total}, got {v[-1]}")


def _check_index_range(idx: torch.Tensor, size: int, name: str) -> None:
    if idx.numel() and not bool(((idx >= 0) & (idx < size)).all()):
        raise IndexError(
            f"sam2rl_fast: {name} holds values in [{int(idx.min())}, {int(idx.max())}] "
            f"but must lie in [0, {size - 1}]"
        )


if _C is not None:
    # Fake (meta) kernels: shapes only, so the ops trace under torch.compile and export.

    @torch.library.register_fake("sam2rl_fast::memory_append")
    def _memory_append_fake(bank, mem, slots, obj_score, no_obj_embed):
        torch._check(mem.shape[0] == bank.shape[0] and mem.shape[1] == bank.shape[3])
        torch._check(mem.shape[2] * mem.shape[3] == bank.shape[2])
        return None

    @torch.library.register_fake("sam2rl_fast::memory_gather")
    def _memory_gather_fake(
        bank, spatial_pos, temporal_pos, slots, tslots, ptrs, ptr_idx, ptr_pos, out_dtype
    ):
        B, _, HW, C = bank.shape
        torch._check(slots.shape[0] == B and ptr_idx.shape[0] == B)
        torch._check(ptrs.shape[2] % C == 0)
        M = slots.shape[1] * HW + ptr_idx.shape[1] * (ptrs.shape[2] // C)
        memory = bank.new_empty((M, B, C), dtype=out_dtype)
        memory_pos = spatial_pos.new_empty((M, B, C))
        return memory, memory_pos

    @torch.library.register_fake("sam2rl_fast::memory_gather_varlen")
    def _memory_gather_varlen_fake(
        bank, spatial_pos, temporal_pos, objects, slots, tslots, cu_mems, ptrs, ptr_idx, ptr_pos,
        cu_ptrs, out_dtype
    ):
        # The packed length follows from the index arrays' lengths, not their values: no
        # data-dependent (unbacked) size.
        _, _, HW, C = bank.shape
        torch._check(ptrs.shape[2] % C == 0)
        torch._check(cu_ptrs.shape[0] == cu_mems.shape[0])
        M = slots.shape[0] * HW + ptr_idx.shape[0] * (ptrs.shape[2] // C)
        memory = bank.new_empty((M, C), dtype=out_dtype)
        memory_pos = spatial_pos.new_empty((M, C))
        return memory, memory_pos, cu_mems.new_empty(cu_mems.shape)
