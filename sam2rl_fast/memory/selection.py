"""Which memories a frame reads, and where a new memory goes: sam2's stock rule over a `MemoryBank`.

The stock rule (sam2_base._prepare_memory_conditioned_features) reads every conditioning
(prompted) frame at temporal position 6, then the 6 previous frames (with a stride r for
t_rel >= 2, mirrored in reverse), skipping frames it does not have, and up to 16 object
pointers: conditioning ones first, then frames f-1, f-2, ... Here it is a selection over
bank slots, plus a write rule that evicts exactly the memories the stock rule can never
read again, so a bank of 1 + 6 slots (and 1 + 15 pointers) reproduces stock bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sam2.modeling.sam2_utils import select_closest_cond_frames


def fifo_slot(slot_frame, slot_is_cond, among=None) -> int:
    """Where a new memory goes under SAM 2's FIFO, the one write rule every policy shares:
    the first empty slot, else the non-conditioning slot holding the oldest frame (with
    every frame stored, the memory the stock rule can never read again); -1 when neither
    exists.

    slot_frame [S] the frame of each slot (-1 = empty) and slot_is_cond [S] bool, as a
    bank's ``frame_idx[b]`` / ``is_cond[b]`` (or ``ptr_frame`` / ``ptr_is_cond``) or an
    observation's ``slot_frame[b]`` / ``slot_is_cond[b]`` hold them; `among` [S] bool
    limits the choice to some slots.
    """
    frames = np.asarray(slot_frame).reshape(-1)
    cand = ~np.asarray(slot_is_cond, dtype=bool).reshape(-1)
    if among is not None:
        cand &= np.asarray(among, dtype=bool).reshape(-1)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return -1
    free = idx[frames[idx] < 0]
    return int(free[0]) if free.size else int(idx[np.argmin(frames[idx])])


@dataclass
class MemorySelection:
    """What one frame reads from the bank, per object (gathered together when the counts agree).

    slots/tslots: [B][N] memory slots and their temporal-position indices, in sequence order.
    ptr_slots/ptr_dists: [B][P] pointer slots and their signed temporal distances.
    max_ptrs: the normaliser of the pointer distance encoding (sam2: min(num_frames, 16)).
    """

    slots: list[list[int]]
    tslots: list[list[int]]
    ptr_slots: list[list[int]]
    ptr_dists: list[list[int]]
    max_ptrs: int

    def index_tensors(self, bank) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Checked here, not on construction: a selection whose objects differ is valid, it
        # is gathered in groups (TrackingStep._attend).
        for name in ("slots", "ptr_slots"):
            lens = {len(x) for x in getattr(self, name)}
            if len(lens) > 1:
                raise ValueError(f"MemorySelection: objects read different numbers of {name} "
                                 f"({sorted(lens)}); gather them in separate groups")
        B = len(self.slots)
        if B != bank.num_objects:
            raise ValueError(f"MemorySelection for {B} objects, bank holds {bank.num_objects}")
        slots = torch.tensor(self.slots, dtype=torch.long).reshape(B, -1)
        tslots = torch.tensor(self.tslots, dtype=torch.long).reshape(B, -1)
        ptr_idx = torch.tensor(self.ptr_slots, dtype=torch.long).reshape(B, -1)
        for t, size, what in [(slots, bank.capacity, "slots"), (ptr_idx, bank.ptr_capacity, "ptr_slots")]:
            if t.numel() and bool(((t < 0) | (t >= size)).any()):
                raise IndexError(f"MemorySelection: {what} {t.tolist()} outside [0, {size - 1}]")
        return slots, tslots, ptr_idx


@dataclass(frozen=True)
class StockMemoryRule:
    """sam2's fixed memory rule. Build it from a model with `StockMemoryRule.from_sam2(model)`."""

    num_maskmem: int = 7
    stride: int = 1
    use_obj_ptrs: bool = True
    max_obj_ptrs: int = 16
    only_ptrs_in_past: bool = True
    signed_ptr_dist: bool = True
    max_cond_frames: int = -1

    @classmethod
    def from_sam2(cls, model) -> "StockMemoryRule":
        return cls(
            num_maskmem=model.num_maskmem,
            stride=model.memory_temporal_stride_for_eval,
            use_obj_ptrs=model.use_obj_ptrs_in_encoder,
            max_obj_ptrs=model.max_obj_ptrs_in_encoder,
            only_ptrs_in_past=model.only_obj_ptrs_in_the_past_for_eval,
            signed_ptr_dist=model.use_signed_tpos_enc_to_obj_ptrs,
            max_cond_frames=model.max_cond_frames_in_attn,
        )

    # ------------------------------------------------------------------ reading
    def recent_frames(self, frame_idx: int, reverse: bool = False) -> list[tuple[int, int]]:
        """[(t_pos, frame)] of the non-conditioning frames read at `frame_idx`, oldest first."""
        r, out = self.stride, []
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx + 1 if reverse else frame_idx - 1
            elif not reverse:
                prev = ((frame_idx - 2) // r) * r - (t_rel - 2) * r
            else:
                prev = -(-(frame_idx + 2) // r) * r + (t_rel - 2) * r
            out.append((t_pos, prev))
        return out

    def max_ptrs(self, num_frames: int | None) -> int:
        return self.max_obj_ptrs if num_frames is None else min(num_frames, self.max_obj_ptrs)

    def select(self, bank, frame_idx: int, num_frames: int | None = None,
               reverse: bool = False) -> MemorySelection:
        """The memories sam2 reads at `frame_idx` (not an initial conditioning frame)."""
        slots, tslots, ptr_slots, ptr_dists = [], [], [], []
        max_ptrs = self.max_ptrs(num_frames)
        for b in range(bank.num_objects):
            cond = bank.slot_map(b, cond=True)
            if not cond:
                raise ValueError(f"object {b} has no conditioning memory: prompt it first")
            sel, unsel = select_closest_cond_frames(frame_idx, cond, self.max_cond_frames)
            other = bank.slot_map(b, cond=False)
            s = [slot for slot in sel.values()]
            ts = [self.num_maskmem - 1] * len(s)
            for t_pos, prev in self.recent_frames(frame_idx, reverse):
                slot = other.get(prev, unsel.get(prev))
                if slot is not None:
                    s.append(slot)
                    ts.append(self.num_maskmem - t_pos - 1)
            ps, pd = [], []
            if self.use_obj_ptrs:
                cond_ptr = bank.ptr_map(b, cond=True)
                other_ptr = bank.ptr_map(b, cond=False)
                sign = -1 if reverse else 1
                for t in sel:
                    if self.only_ptrs_in_past and (t < frame_idx if reverse else t > frame_idx):
                        continue
                    if t in cond_ptr:
                        ps.append(cond_ptr[t])
                        pd.append((frame_idx - t) * sign if self.signed_ptr_dist
                                  else abs(frame_idx - t))
                unsel_ptr = {t: cond_ptr[t] for t in unsel if t in cond_ptr}
                for t_diff in range(1, max_ptrs):
                    t = frame_idx + t_diff if reverse else frame_idx - t_diff
                    if t < 0 or (num_frames is not None and t >= num_frames):
                        break
                    r = other_ptr.get(t, unsel_ptr.get(t))
                    if r is not None:
                        ps.append(r)
                        pd.append(t_diff)
            slots.append(s)
            tslots.append(ts)
            ptr_slots.append(ps)
            ptr_dists.append(pd)
        return MemorySelection(slots, tslots, ptr_slots, ptr_dists, max_ptrs)

    # ------------------------------------------------------------------ writing
    def assign(self, bank, frame_idx: int, is_cond: bool = False,
               reverse: bool = False) -> tuple[list[int], list[int]]:
        """Slots (spatial, pointer) per object for the memory of `frame_idx`.

        Evicts the non-conditioning memories and pointers the stock rule will never read
        again (it only moves forward), so the bank never needs more than
        ``#cond + num_maskmem - 1`` slots and ``#cond + max_obj_ptrs - 1`` pointer slots.
        """
        return (self.assign_memories(bank, frame_idx, is_cond, reverse),
                self.assign_pointers(bank, frame_idx, is_cond, reverse))

    def assign_memories(self, bank, frame_idx: int, is_cond: bool = False,
                        reverse: bool = False) -> list[int]:
        """The spatial half of `assign`."""
        nxt = frame_idx - 1 if reverse else frame_idx + 1
        keep = {f for _, f in self.recent_frames(nxt, reverse)}
        slots = []
        for b in range(bank.num_objects):
            if not is_cond:
                for f, s in bank.slot_map(b, cond=False).items():
                    if f not in keep:
                        bank.evict(b, s)
            slots.append(self._slot_for(bank.slot_map(b, True) | bank.slot_map(b, False),
                                        bank.frame_idx[b].numpy(), bank.is_cond[b].numpy(),
                                        frame_idx, "memory", bank.capacity))
        return slots

    def assign_pointers(self, bank, frame_idx: int, is_cond: bool = False,
                        reverse: bool = False) -> list[int]:
        """The object-pointer half of `assign` (-1 per object when the model uses none)."""
        if not self.use_obj_ptrs:
            return [-1] * bank.num_objects
        nxt = frame_idx - 1 if reverse else frame_idx + 1
        keep = {nxt + d if reverse else nxt - d for d in range(1, self.max_obj_ptrs)}
        ptr_slots = []
        for b in range(bank.num_objects):
            if not is_cond:
                for f, r in bank.ptr_map(b, cond=False).items():
                    if f not in keep:
                        bank.evict_ptr(b, r)
            ptr_slots.append(self._slot_for(bank.ptr_map(b, True) | bank.ptr_map(b, False),
                                            bank.ptr_frame[b].numpy(), bank.ptr_is_cond[b].numpy(),
                                            frame_idx, "pointer", bank.ptr_capacity))
        return ptr_slots

    @staticmethod
    def _slot_for(taken: dict[int, int], frames, is_cond, frame_idx: int, what: str,
                  capacity: int) -> int:
        """The slot of `frame_idx`'s memory once the unreadable ones are evicted: its own if
        the frame is re-encoded (e.g. a new prompt), else where `fifo_slot` puts it, which
        must be empty (a full slot there is one the stock rule still reads)."""
        if frame_idx in taken:
            return taken[frame_idx]
        slot = fifo_slot(frames, is_cond)
        if slot < 0 or frames[slot] >= 0:
            raise RuntimeError(
                f"MemoryBank is full: no free {what} slot for frame {frame_idx} "
                f"(capacity {capacity}); every slot holds a conditioning frame or a memory the "
                f"stock rule still reads. Build the bank with a larger capacity.")
        return slot
