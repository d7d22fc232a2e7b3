"""`MemoryBank`: a fixed-capacity store of past memories, replacing sam2's ever-growing dict.

Stock sam2 keeps every past frame's outputs (about 769 KiB per frame per object) and
never evicts them. The bank preallocates `capacity` spatial slots and `ptr_capacity`
object-pointer slots per object; a memory policy (the stock rule, a heuristic or a
learned agent) decides which slot a new memory replaces. Memory use is fixed by the
capacities whatever the video length.

Features live on the compute device; the small per-slot metadata the policies read lives
on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sam2rl_fast.ops.memory_bank import (
    memory_append,
    memory_gather,
    memory_gather_varlen,
)

SlotArg = int | Sequence[int] | torch.Tensor


class MemoryBank:
    """Per-object memory slots, batched over objects.

    Args:
        num_objects: B, objects tracked together.
        num_tokens: HW, tokens per memory (grid size squared: 256 at 256-px input, 4096 at 1024).
        capacity: S, spatial memory slots per object (stock sam2 reads 1 prompt + 6 recent = 7).
        ptr_capacity: R, object-pointer slots per object (stock reads up to 16 pointers).
        mem_dim: C, memory channels (64 in every sam2 config).
        ptr_dim: D, object-pointer size (256).
        dtype: storage dtype of the features; bfloat16 as stock sam2 stores them, or float32.
        device: where the features live.

    Tensors:
        ``feats`` [B, S, HW, C] (token-major), ``ptrs`` [B, R, D] float32; host metadata
        ``frame_idx`` [B, S] (-1 = empty), ``is_cond``, ``obj_score``, ``iou``, ``present``,
        ``ptr_frame`` [B, R] (-1 = empty), ``ptr_is_cond``.
    """

    def __init__(
        self,
        num_objects: int,
        num_tokens: int,
        capacity: int = 7,
        ptr_capacity: int = 16,
        mem_dim: int = 64,
        ptr_dim: int = 256,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
    ):
        for name, v in [("num_objects", num_objects), ("num_tokens", num_tokens),
                        ("capacity", capacity), ("ptr_capacity", ptr_capacity),
                        ("mem_dim", mem_dim), ("ptr_dim", ptr_dim)]:
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MemoryBank: {name} must be a positive int, got {v!r}")
        if ptr_dim % mem_dim:
            raise ValueError(f"MemoryBank: ptr_dim {ptr_dim} must be a multiple of mem_dim {mem_dim}")
        if dtype not in (torch.bfloat16, torch.float32, torch.float16):
            raise ValueError(f"MemoryBank: dtype must be bfloat16, float32 or float16, got {dtype}")
        B, S, R = num_objects, capacity, ptr_capacity
        self.num_objects, self.num_tokens, self.capacity = B, num_tokens, S
        self.ptr_capacity, self.mem_dim, self.ptr_dim = R, mem_dim, ptr_dim
        self.device = torch.device(device)
        self.feats = torch.empty(B, S, num_tokens, mem_dim, dtype=dtype, device=self.device)
        self.ptrs = torch.empty(B, R, ptr_dim, dtype=torch.float32, device=self.device)
        self.frame_idx = torch.full((B, S), -1, dtype=torch.long)
        self.is_cond = torch.zeros(B, S, dtype=torch.bool)
        self.obj_score = torch.full((B, S), float("nan"))
        self.iou = torch.full((B, S), float("nan"))
        self.present = torch.zeros(B, S, dtype=torch.bool)
        self.ptr_frame = torch.full((B, R), -1, dtype=torch.long)
        self.ptr_is_cond = torch.zeros(B, R, dtype=torch.bool)

    # ---------------------------------------------------------------- inspection
    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def nbytes(self) -> int:
        """Device bytes held by the bank: fixed at construction."""
        return self.feats.numel() * self.feats.element_size() + self.ptrs.numel() * 4

    # The metadata are small CPU tensors read once per call as Python lists: indexing them
    # element by element costs a tensor view per element (most of a batched RL step's
    # Python time).
    def occupied(self, obj: int) -> list[int]:
        """Slots of object `obj` that hold a memory."""
        return [s for s, f in enumerate(self.frame_idx[obj].tolist()) if f >= 0]

    def free_slots(self, obj: int) -> list[int]:
        return [s for s, f in enumerate(self.frame_idx[obj].tolist()) if f < 0]

    def free_ptr_slots(self, obj: int) -> list[int]:
        return [r for r, f in enumerate(self.ptr_frame[obj].tolist()) if f < 0]

    def slot_map(self, obj: int, cond: bool) -> dict[int, int]:
        """{frame index: slot} of the object's conditioning (or other) memories, in slot order."""
        return _frame_map(self.frame_idx[obj].tolist(), self.is_cond[obj].tolist(), cond)

    def ptr_map(self, obj: int, cond: bool) -> dict[int, int]:
        """{frame index: pointer slot} of the object's conditioning (or other) pointers."""
        return _frame_map(self.ptr_frame[obj].tolist(), self.ptr_is_cond[obj].tolist(), cond)

    # ---------------------------------------------------------------- writing
    def _slots(self, slots: SlotArg, size: int, what: str) -> torch.Tensor:
        t = torch.as_tensor(slots, dtype=torch.long).reshape(-1).cpu()
        if t.numel() == 1 and self.num_objects > 1:
            t = t.expand(self.num_objects).clone()
        if t.numel() != self.num_objects:
            raise ValueError(f"MemoryBank: {what} needs one slot per object "
                             f"({self.num_objects}), got {t.numel()}")
        if bool(((t < -1) | (t >= size)).any()):
            raise IndexError(f"MemoryBank: {what} slots {t.tolist()} out of range [-1, {size - 1}]")
        return t

    def append(
        self,
        mem: torch.Tensor,  # [B, C, H, W] memory-encoder output (before no_obj_embed)
        slots: SlotArg,  # [B], -1 = this object does not store
        *,
        frame_idx: int,
        obj_score: torch.Tensor,  # [B] object-score logits
        is_cond: bool = False,
        iou: torch.Tensor | None = None,  # [B] predicted IoU
        no_obj_embed: torch.Tensor | None = None,  # [C] (SAM 2.1)
    ) -> None:
        """Store newly encoded memories, replacing whatever the slots held."""
        s = self._slots(slots, self.capacity, "append")
        if mem.device != self.device:
            raise ValueError(f"MemoryBank: mem is on {mem.device}, the bank on {self.device}")
        score = torch.as_tensor(obj_score, dtype=torch.float32).reshape(-1)
        memory_append(
            self.feats, mem, s.to(self.device), score.to(self.device),
            None if no_obj_embed is None else no_obj_embed.reshape(-1).float().to(self.device),
        )
        self._record(s, frame_idx, is_cond, score, iou)

    def _record(self, s: torch.Tensor, frame_idx: int, is_cond: bool, score: torch.Tensor,
                iou: torch.Tensor | None) -> None:
        """The host metadata of memories just stored in slots `s` [B] (-1 = not stored)."""
        keep = s >= 0
        rows, cols = torch.nonzero(keep).reshape(-1), s[keep]
        score_cpu = score.detach().cpu()
        self.frame_idx[rows, cols] = frame_idx
        self.is_cond[rows, cols] = is_cond
        self.obj_score[rows, cols] = score_cpu[rows]
        self.present[rows, cols] = score_cpu[rows] > 0
        iou_cpu = (torch.full_like(score_cpu, float("nan")) if iou is None
                   else torch.as_tensor(iou, dtype=torch.float32).reshape(-1).detach().cpu())
        self.iou[rows, cols] = iou_cpu[rows]

    def append_ptr(
        self,
        obj_ptr: torch.Tensor,  # [B, D]
        slots: SlotArg,  # [B], -1 = not stored
        *,
        frame_idx: int,
        is_cond: bool = False,
    ) -> None:
        """Store object pointers."""
        s = self._slots(slots, self.ptr_capacity, "append_ptr")
        if obj_ptr.shape != (self.num_objects, self.ptr_dim):
            raise ValueError(f"MemoryBank: obj_ptr must be [{self.num_objects}, {self.ptr_dim}], "
                             f"got {list(obj_ptr.shape)}")
        keep = s >= 0
        rows, cols = torch.nonzero(keep).reshape(-1), s[keep]
        self.ptrs[rows.to(self.device), cols.to(self.device)] = obj_ptr[rows.to(obj_ptr.device)].to(
            self.device, torch.float32)
        self._record_ptr(s, frame_idx, is_cond)

    def _record_ptr(self, s: torch.Tensor, frame_idx: int, is_cond: bool) -> None:
        """The host metadata of pointers just stored in slots `s` [B] (-1 = not stored)."""
        keep = s >= 0
        rows, cols = torch.nonzero(keep).reshape(-1), s[keep]
        self.ptr_frame[rows, cols] = frame_idx
        self.ptr_is_cond[rows, cols] = is_cond

    def evict(self, obj: int, slot: int) -> None:
        """Forget the memory in `slot` of object `obj`."""
        self.frame_idx[obj, slot] = -1
        self.is_cond[obj, slot] = False
        self.present[obj, slot] = False
        self.obj_score[obj, slot] = float("nan")
        self.iou[obj, slot] = float("nan")

    def evict_ptr(self, obj: int, slot: int) -> None:
        self.ptr_frame[obj, slot] = -1
        self.ptr_is_cond[obj, slot] = False

    # ---------------------------------------------------------------- reading
    def gather(self, selection, encodings) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Memory attention's inputs for a `MemorySelection`.

        Returns ``(memory [M, B, C], memory_pos [M, B, C], num_obj_ptr_tokens)``, what sam2's
        ``_prepare_memory_conditioned_features`` passes to ``memory_attention``.
        """
        slots, tslots, ptr_idx = selection.index_tensors(self)
        ptr_pos = encodings.pointer_pos(selection.ptr_dists, selection.max_ptrs, self.num_objects)
        dev = self.device
        return memory_gather(
            self.feats, encodings.spatial_pos, encodings.temporal_pos, slots.to(dev),
            tslots.to(dev), self.ptrs, ptr_idx.to(dev), ptr_pos, validate=False,
        )

    def gather_varlen(self, selection, encodings, objects: Sequence[int] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Memory attention's inputs for objects whose selections differ in size, in one pass.

        Sequence l is object ``objects[l]`` (default: every object, in order): its rows of
        the packed outputs are what `gather` gives that object alone, memories then
        pointers. Put objects of equal counts next to each other and their block
        ``memory[r0:r1].view(n, M_l, C).transpose(0, 1)`` is memory attention's
        ``[M_l, n, C]`` input, without a copy.

        Returns ``(memory [total, C], memory_pos [total, C], cu_seqlens)``: the row offsets
        as a host list of L + 1 ints (no device read).
        """
        B = self.num_objects
        if len(selection.slots) != B:
            raise ValueError(f"MemorySelection for {len(selection.slots)} objects, bank holds {B}")
        objs = list(range(B)) if objects is None else [int(o) for o in objects]
        if any(not 0 <= o < B for o in objs):
            raise IndexError(f"MemoryBank: objects {objs} outside [0, {B - 1}]")
        split = self.ptr_dim // self.mem_dim
        slots, tslots, ptr_idx, cu_mems, cu_ptrs, cu_rows = [], [], [], [0], [0], [0]
        for o in objs:
            s, ts, ps = selection.slots[o], selection.tslots[o], selection.ptr_slots[o]
            if len(ts) != len(s) or len(selection.ptr_dists[o]) != len(ps):
                raise ValueError(f"MemorySelection: object {o} has {len(s)} slots and {len(ts)} "
                                 f"tslots, {len(ps)} pointers and {len(selection.ptr_dists[o])} "
                                 "distances")
            slots += s
            tslots += ts
            ptr_idx += ps
            cu_mems.append(len(slots))
            cu_ptrs.append(len(ptr_idx))
            cu_rows.append(cu_rows[-1] + len(s) * self.num_tokens + len(ps) * split)
        for vals, size, what in [(slots, self.capacity, "slots"), (ptr_idx, self.ptr_capacity, "ptr_slots")]:
            if any(not 0 <= v < size for v in vals):
                raise IndexError(f"MemorySelection: {what} {vals} outside [0, {size - 1}]")
        # Pointer encodings once per distinct list of distances, as `pointer_pos` computes them.
        pos: dict[tuple[int, ...], torch.Tensor] = {}
        for o in objs:
            key = tuple(selection.ptr_dists[o])
            if key not in pos:
                pos[key] = encodings.pointer_pos([list(key)], selection.max_ptrs, 1)[0]  # [P, C]
        ptr_pos = torch.cat([pos[tuple(selection.ptr_dists[o])] for o in objs]) if objs else \
            encodings.spatial_pos.new_zeros(0, self.mem_dim)
        # Every index in one host-to-device copy, sliced there.
        head = [len(slots), len(tslots), len(ptr_idx), len(cu_mems), len(cu_ptrs)]
        idx = torch.tensor(slots + tslots + ptr_idx + cu_mems + cu_ptrs + objs, dtype=torch.long)
        parts = torch.split(idx.to(self.device), head + [len(objs)])
        memory, memory_pos, _ = memory_gather_varlen(
            self.feats, encodings.spatial_pos, encodings.temporal_pos, parts[0], parts[1],
            parts[3], self.ptrs, parts[2], ptr_pos.to(self.device), parts[4],
            objects=None if objects is None else parts[5], validate=False)
        return memory, memory_pos, cu_rows


def _frame_map(frames: list[int], is_cond: list[bool], cond: bool) -> dict[int, int]:
    return {f: s for s, (f, c) in enumerate(zip(frames, is_cond)) if f >= 0 and c == cond}
