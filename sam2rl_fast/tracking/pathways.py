"""SAM2Long's pathways as lanes of a `TrackingStep` (the rule: `sam2rl_fast.policies.sam2long`).

Each object of a cohort gets P lanes (lane = object * P + pathway), each with its own
memory in the one `MemoryBank`, all on the frame's shared image features. Per frame:
memory attention and SAM heads for every lane -> the policy picks the P best of each
object's P x 3 branches -> the new lanes' banks become copies of their parents' (the
bank's per-lane tensors and host metadata reordered along the lane axis) -> each new lane
encodes its chosen mask and stores it if the policy says so (pointers: the stock rule).
The heads' output already holds the chosen masks when every parent is taken once with the
mask the heads were told to choose; otherwise the heads run again on the parents'
memory-conditioned features with the chosen candidates. Memory-attention modulation by
object scores scales each memory frame's rows of the gathered memory
(`ModulatedMemoryBank`).
"""

from __future__ import annotations

from dataclasses import fields

import torch

from sam2rl_fast.memory.bank import MemoryBank
from sam2rl_fast.model.sam_heads import HeadOutput
from sam2rl_fast.policies.sam2long import memory_weights
from sam2rl_fast.tracking.step import TrackingStep


def reorder_lanes(bank: MemoryBank, parents) -> None:
    """Lane b of `bank` becomes a copy of lane parents[b] (in place): every per-lane tensor
    of the bank (features, pointers and the host metadata: any tensor attribute whose
    first dimension is the lane count), in one gather each."""
    idx = torch.as_tensor(parents, dtype=torch.long).reshape(-1)
    B = bank.num_objects
    if idx.shape != (B,) or bool(((idx < 0) | (idx >= B)).any()):
        raise ValueError(f"reorder_lanes: need {B} parent lanes in [0, {B - 1}], got {idx.tolist()}")
    if torch.equal(idx, torch.arange(B)):
        return
    for t in vars(bank).values():
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == B:
            t.copy_(t.index_select(0, idx.to(t.device)))


def reorder_head(head: HeadOutput, rows: torch.Tensor) -> HeadOutput:
    """The heads' output of lanes `rows`, in that order."""
    r = rows.to(head.ious.device)
    return HeadOutput(**{k.name: getattr(head, k.name).index_select(0, r) for k in fields(head)})


class ModulatedMemoryBank(MemoryBank):
    """A `MemoryBank` whose gathers scale each memory frame's tokens by its object-score
    weight (`memory_weights` over the frames a lane reads; pointers are not scaled).
    `PathwayStep` builds one when the policy modulates."""

    def __init__(self, *args, modulation=(1.0, 1.0), **kwargs):
        super().__init__(*args, **kwargs)
        self.modulation = tuple(modulation)

    def _weights(self, selection, o: int) -> torch.Tensor:
        s = selection.slots[o]
        return memory_weights(self.obj_score[o, s], *self.modulation) if s else torch.zeros(0)

    def gather_varlen(self, selection, encodings, objects=None):
        memory, memory_pos, cu = super().gather_varlen(selection, encodings, objects)
        split = self.ptr_dim // self.mem_dim
        w, n = [], []
        for o in range(self.num_objects) if objects is None else objects:
            w += self._weights(selection, o).tolist() + [1.0]
            n += [self.num_tokens] * len(selection.slots[o]) + [len(selection.ptr_slots[o]) * split]
        scale = torch.repeat_interleave(torch.tensor(w), torch.tensor(n))
        return memory * scale.to(memory.device, memory.dtype)[:, None], memory_pos, cu

    def gather(self, selection, encodings):
        memory, memory_pos, n_ptr = super().gather(selection, encodings)  # [M, B, C]
        scale = torch.ones(memory.shape[:2], dtype=torch.float64)
        for o in range(self.num_objects):
            w = self._weights(selection, o)
            scale[:len(w) * self.num_tokens, o] = torch.repeat_interleave(w, self.num_tokens)
        return memory * scale.to(memory.device, memory.dtype)[..., None], memory_pos, n_ptr


class PathwayStep(TrackingStep):
    """A `TrackingStep` with `policy.pathways` lanes per object, driven by a
    `Sam2LongPolicy`. Its driver sees the `TrackingStep` interface over objects: `reset`,
    `prompt` and `track` take and return one row per object (its best pathway's output),
    `best_lane` names that pathway's lane in `bank`; `advance`, `store` and `observe` work
    on the lanes, as `track` runs them."""

    def __init__(self, model, memory_attention, capacity: int, policy):
        super().__init__(model, memory_attention, capacity)
        self.policy, self.P = policy, policy.pathways

    def reset(self, num_objects: int, extra_cond: int = 0) -> None:
        """Empty memories for the P lanes of each of `num_objects` objects."""
        self.num_objects = num_objects
        super().reset(num_objects * self.P, extra_cond)

    def make_bank(self, num_lanes: int, ptr_capacity: int, cls=MemoryBank, **options) -> MemoryBank:
        if self.policy.modulated:  # modulated gathers
            cls, options = ModulatedMemoryBank, {**options, "modulation": self.policy.modulation}
        return super().make_bank(num_lanes, ptr_capacity, cls, **options)

    def best_lane(self, obj: int) -> int:
        """The lane of object `obj`'s best pathway (its cumulative score)."""
        return self.policy.best_lanes()[obj]

    def prompt(self, f: int, feats, prompts, video_hw, num_frames=None, tm=None):
        """`prompts` one per object (None: none), each given to all the object's lanes.
        Returns as `TrackingStep.prompt`, one row per prompted object: its best pathway's
        (on the start frame the pathways are copies and the first is the best)."""
        P = self.P
        lanes, low, score, iou, slots = super().prompt(
            f, feats, [p for p in prompts for _ in range(P)], video_hw, num_frames, tm)
        best = self.policy.best_lanes()
        objs = [o for o, p in enumerate(prompts) if p is not None]
        rows = [lanes.index(best[o]) for o in objs]
        return objs, low[rows], score[rows], iou[rows], slots[rows]

    def track(self, f: int, feats, policy=None, num_frames=None, tm=None, fixed=frozenset()):
        """One tracked frame of every lane (`_track`; the policy is the step's own) for the
        objects, `fixed` ones (a correction frame) stored by `prompt` instead. Returns (the
        heads' output, slots) of each object's best pathway."""
        lanes_fixed = frozenset(o * self.P + p for o in fixed for p in range(self.P))
        head, slots = self._track(f, feats, num_frames, tm, lanes_fixed)
        best = self.policy.best_lanes()
        return reorder_head(head, torch.tensor(best)), [slots[b] for b in best]

    def _track(self, f, feats, num_frames, tm, fixed):
        """Memory attention, heads, branch selection, bank copies, memory encoder and store
        for every lane; (the new lanes' heads' output, their slots)."""
        policy = self.policy
        pix = self.attend(f, feats, policy.read_rule, num_frames, tm)
        picked = {}

        def choose(multimasks, ious, obj_scores):  # the selection, and each parent's mask
            picked["br"] = br = policy.select(multimasks, ious, obj_scores)
            choice = torch.argmax(ious, dim=-1).cpu()
            choice[br.lanes()] = br.cands.reshape(-1)
            return choice.to(ious.device)

        head = self.heads(pix, feats, choose, tm)
        with self.timed(tm, "policy"):
            br = picked.get("br")
            if br is None:  # one candidate per lane: the heads asked no chooser
                br = policy.select(head.multimasks, head.ious, head.object_score_logits)
            parents, cands = br.lanes(), br.cands.reshape(-1)
            # The heads' rows are the branches when each parent is taken once, with the mask
            # the heads chose for it (reordered if the lanes permute); else (a parent taken
            # twice) they run again on the parents' features with each branch's mask.
            rows_ok = (len(set(parents.tolist())) == self.num_lanes
                       and torch.equal(head.choice.cpu()[parents], cands))
            if rows_ok and not torch.equal(parents, torch.arange(self.num_lanes)):
                head = reorder_head(head, parents)
        if not rows_ok:
            head = self.heads(pix.index_select(0, parents.to(pix.device)), feats,
                              lambda *_: cands.to(pix.device), tm)
        mem = self.encode(feats, head, tm)
        with self.timed(tm, "policy"):
            self.last_parents = parents  # [n * P] the parent lane of each lane (inspection)
            reorder_lanes(self.bank, parents)
            slots = policy.memory_slots(self.bank, head.chosen_iou, head.object_score_logits)
            slots = [-1 if b in fixed else s for b, s in enumerate(slots)]
            self.store(f, head, mem, slots, observed=False, skip_pointers=fixed)
        return head, slots


__all__ = ["ModulatedMemoryBank", "PathwayStep", "reorder_head", "reorder_lanes"]
