"""The memory-policy contract: what a policy sees each frame and what it answers.

After frame t's memory is encoded, the tracker builds a `MemoryObservation` (the bank's
slots and the new candidate memory, per object) and asks the policy where the candidate
goes: a slot index it replaces, or -1 (not stored). The flat vector form
(`MemoryObservation.vector`, layout `OBS_LAYOUT`) is the contract learned agents, the RL
environment and the ONNX export share; docs/memory-policy.md documents it field by field.

Which memories a frame *reads* is the policy's `read_rule`: the stock rule reads by frame
distance; every other policy reads all occupied slots (`RecencyReadRule`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.memory.selection import MemorySelection, StockMemoryRule, fifo_slot

OBS_LAYOUT = "sam2rl-fast/memory-obs/v1"
SLOT_FEATURES = ("occupied", "is_cond", "age", "iou", "obj_prob", "area", "displacement",
                 "similarity")
CANDIDATE_FEATURES = ("iou", "obj_prob", "area", "area_ratio", "motion", "alt_box_iou",
                      "since_store", "similarity")
AGE_SCALE = 100.0  # ages and gaps are divided by this and clipped to [0, 1]


class ObservationLayoutError(ValueError):
    """An agent built for another observation layout (version, slot count or size)."""


def obs_size(capacity: int) -> int:
    return capacity * len(SLOT_FEATURES) + len(CANDIDATE_FEATURES)


def check_layout(layout: str, capacity: int, expected_capacity: int, size: int | None = None,
                 who: str = "agent") -> None:
    """Raise `ObservationLayoutError` unless an agent's layout matches the tracker's."""
    if layout != OBS_LAYOUT:
        raise ObservationLayoutError(f"{who} was trained for observation layout {layout!r}; "
                                     f"this tracker produces {OBS_LAYOUT!r}")
    if capacity != expected_capacity:
        raise ObservationLayoutError(f"{who} was trained for a bank of {capacity} slots; "
                                     f"this tracker's bank has {expected_capacity}")
    if size is not None and size != obs_size(capacity):
        raise ObservationLayoutError(f"{who} expects observations of size {size}, "
                                     f"layout {OBS_LAYOUT} with {capacity} slots has {obs_size(capacity)}")


@dataclass
class MemoryObservation:
    """What a policy sees at frame `frame_idx` (B objects, S slots), all numpy.

    slots: [B, S, len(SLOT_FEATURES)] float32, candidate: [B, len(CANDIDATE_FEATURES)] float32.
    The raw values heuristics use are kept beside the normalised features.
    """

    frame_idx: int
    slots: np.ndarray
    candidate: np.ndarray
    slot_frame: np.ndarray  # [B, S] frame index per slot, -1 = empty
    slot_is_cond: np.ndarray  # [B, S] bool
    iou: np.ndarray  # [B] candidate's predicted IoU
    obj_score: np.ndarray  # [B] candidate's object-score logit
    area: np.ndarray  # [B] candidate mask area, fraction of the frame
    alt_box_iou: np.ndarray  # [B] box IoU with the best alternative mask (1 = no distractor)
    motion_score: np.ndarray | None = None  # [B] policy-specific (e.g. SAMURAI's Kalman IoU)

    @property
    def num_objects(self) -> int:
        return self.slots.shape[0]

    @property
    def capacity(self) -> int:
        return self.slots.shape[1]

    def vector(self) -> np.ndarray:
        """[B, obs_size(S)] float32: slot features (slot-major) then candidate features."""
        B = self.num_objects
        return np.concatenate([self.slots.reshape(B, -1), self.candidate], axis=1).astype(np.float32)

    def replaceable(self) -> np.ndarray:
        """[B, S] bool: slots a policy may overwrite (everything but conditioning memories)."""
        return ~self.slot_is_cond


class RecencyReadRule:
    """Read every occupied slot: conditioning memories first (temporal index num_maskmem-1),
    then the others oldest to newest with temporal indices by recency rank (newest 0), as
    SAM 2 orders and encodes its 6 recent frames. Object pointers follow the stock rule."""

    def __init__(self, stock: StockMemoryRule):
        self.stock = stock

    def select(self, bank, frame_idx: int, num_frames: int | None = None,
               reverse: bool = False) -> MemorySelection:
        sel = self.stock.select(bank, frame_idx, num_frames, reverse)  # pointers, cond check
        top = self.stock.num_maskmem - 1
        slots, tslots = [], []
        for b in range(bank.num_objects):
            cond = list(bank.slot_map(b, cond=True).values())
            other = sorted(bank.slot_map(b, cond=False).items(), reverse=reverse)
            n = len(other)
            slots.append(cond + [s for _, s in other])
            tslots.append([top] * len(cond) + [min(n - 1 - i, top - 1) for i in range(n)])
        return MemorySelection(slots, tslots, sel.ptr_slots, sel.ptr_dists, sel.max_ptrs)


class MemoryPolicy:
    """Base class of memory policies. Subclasses implement `decide` (and may override
    `choose_mask`, `motion_scores`, `reset` and the `read_rule` it sets).

    Object pointers are not the policy's: they always follow the stock rule
    (`StockMemoryRule.assign_pointers`), since they cost 4 tokens each."""

    name = "policy"
    needs_observation = True  # False: `assign` gets obs=None (saves the per-frame statistics)
    # True: the bank's size is part of what the policy was trained for (a learned agent), so
    # a correction prompt takes a replaceable slot instead of adding one
    fixed_capacity = False

    def check_model(self, model) -> None:
        """Raise when the policy cannot run with this SAM 2 model (learned agents check the
        model they were trained on); the hand-made rules run with any."""

    def reset(self, num_objects: int, capacity: int, stock: StockMemoryRule) -> None:
        """Called once before tracking; `stock` is the model's own rule."""
        self.num_objects, self.capacity, self.stock = num_objects, capacity, stock
        self.read_rule = RecencyReadRule(stock)

    def choose_mask(self, multimasks: torch.Tensor, ious: torch.Tensor,
                    obj_scores: torch.Tensor) -> torch.Tensor | None:
        """Index [B] of the candidate mask to output; None = stock's highest predicted IoU."""
        return None

    def motion_scores(self) -> np.ndarray | None:
        """[B] policy-specific motion scores of the chosen masks (after `choose_mask`)."""
        return None

    def decide(self, obs: MemoryObservation) -> np.ndarray:
        """[B] int: the slot each object's candidate replaces, or -1 to not store it."""
        raise NotImplementedError

    def assign(self, bank, frame_idx: int, obs: MemoryObservation | None,
               reverse: bool = False) -> list[int]:
        """Slots for the candidate memories of `frame_idx` (validated `decide`)."""
        act = np.asarray(self.decide(obs), dtype=np.int64).reshape(-1)
        if act.shape != (bank.num_objects,):
            raise ValueError(f"{self.name}: decide() must return one slot per object "
                             f"({bank.num_objects}), got shape {act.shape}")
        ok = obs.replaceable()
        for b, a in enumerate(act):
            if a < -1 or a >= bank.capacity:
                raise ValueError(f"{self.name}: slot {a} for object {b} is outside [-1, {bank.capacity - 1}]")
            if a >= 0 and not ok[b, a]:
                raise ValueError(f"{self.name}: slot {a} of object {b} holds a conditioning "
                                 "(prompted) memory and cannot be replaced")
        return act.tolist()


def oldest_replaceable(obs: MemoryObservation, b: int, among: np.ndarray | None = None) -> int:
    """A free slot if any, else the replaceable slot holding the oldest frame (FIFO):
    `fifo_slot` on object b's slots of the observation."""
    return fifo_slot(obs.slot_frame[b], obs.slot_is_cond[b], among)
