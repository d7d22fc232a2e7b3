"""An upper bound for memory policies: beam search over the decisions against the truth.

Every decision at frame t (drop the candidate, or store it in slot k) changes what frames
t+1, t+2, ... read. `oracle_search` keeps `beam` decision histories per video; each frame,
every history is expanded by every action, all as lanes of one `TrackingStep` (beam x
(capacity + 1) lanes, one memory attention / SAM heads / memory encoder pass per frame),
scored by its cumulative IoU with the ground truth, and the best `beam` distinct ones are
kept (their banks copied lane to lane, `reorder_lanes`). With a beam of 2 or more the
stock rule's own history is always kept as one of them, so the result is never below the
stock rule (a beam of 1 is plain greedy search): it is the best
decision sequence found, a lower bound on the true optimum and the reachable gain a
policy's gain is compared with (the MDP of docs/rl-environment.md: rewarded frames 2..L-1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from sam2rl_fast.eval.metrics import iou as region_iou
from sam2rl_fast.policies.learned import actions_to_slots
from sam2rl_fast.rl.episodes import EpisodeBatch, EpisodeVideo, Lane
from sam2rl_fast.tracking.pathways import reorder_head, reorder_lanes


@dataclass
class OracleResult:
    video: str
    stock: float  # mean IoU of the stock rule over the rewarded frames (2..L-1)
    oracle: float  # mean IoU of the best decision sequence found, same frames
    actions: np.ndarray  # [L-2] its decisions at frames 1..L-2 (0 = drop, k = slot k-1)
    ious: np.ndarray  # [L] its IoU per frame (frame 0: the prompt)
    object_scores: np.ndarray  # [L-2] its object-score logits on frames 2..L-1
    beam: int
    lane_steps: int = 0  # lanes x decisions the search ran
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        return self.oracle - self.stock


@torch.inference_mode()
def oracle_search(video: EpisodeVideo, model, *, beam: int = 4, obj: int = 0,
                  capacity: int = 7, precision: str = "fp32") -> OracleResult:
    """The best decision sequence for `video`'s object `obj` that a beam of `beam` finds.
    Its cost: `beam` x (capacity + 1) lanes for each of the video's L - 2 decisions
    (`OracleResult.lane_steps`), `seconds` of wall time."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    A = capacity + 1
    N = beam * A
    t0 = time.perf_counter()
    batch = EpisodeBatch([video], model, N, obj=obj, capacity=capacity, precision=precision)
    try:
        with batch._precision():
            res = _search(batch, video, beam, obj, A)
    finally:
        batch.close()
    res.lane_steps = N * (batch.L - 2)
    res.seconds = time.perf_counter() - t0
    return res


def _search(batch: EpisodeBatch, video: EpisodeVideo, beam: int, obj: int, A: int) -> OracleResult:
    L, N, st = batch.L, batch.num_lanes, batch.step_
    lane = Lane(0, obj, 0)
    stock = batch.stock_ious([lane])[0]
    batch.reset([lane] * N)  # every lane: the prompt, then frame 1 from it
    head, mem = batch.head, batch.mem
    first = float(batch.ious[0])
    # beam j <- lanes j*A .. j*A+A-1 (action a on lane j*A+a); at the start all beams are one
    hist = [([], [1.0, first], [])] * beam  # (actions, IoUs, object scores) of each beam
    score = np.zeros(beam)
    live = 1  # distinct beams (one history at the start)
    actions = np.tile(np.arange(A), beam)
    for t in range(1, L - 1):
        # beam 0 follows the stock rule (beam > 1): its action on its bank, before the store
        keep = [st.stock.assign_memories(st.bank, t)[0] + 1] if beam > 1 else []
        slots = actions_to_slots(actions, st.bank.is_cond.numpy(), A - 1, who="oracle")
        st.store(t, head, mem, slots.tolist(), observed=False)
        fs = st.advance(t + 1, batch._features(t + 1), batch.read_rule, L, observe=False)
        masks = batch._video_masks(fs.head.low_res_masks, batch.lanes)
        gt = batch._gt(lane, t + 1)
        ious = np.array([float(region_iou(m, gt)) for m in masks])
        obj_scores = fs.head.object_score_logits.reshape(-1).float().cpu().numpy()
        cand = [(score[i // A] + ious[i], i) for i in range(live * A)]
        # the stock continuation first, then the best distinct memory sets of each parent
        seen = {_key(st.bank, i, A) for i in keep}
        for _, i in sorted(cand, key=lambda c: (-c[0], c[1])):
            if len(keep) == beam:
                break
            k = _key(st.bank, i, A)
            if k not in seen:
                seen.add(k)
                keep.append(i)
        live = len(keep)
        keep += [keep[0]] * (beam - live)  # spare beams: copies, never expanded
        hist = [(h[0] + [i % A], h[1] + [float(ious[i])], h[2] + [float(obj_scores[i])])
                for i in keep for h in [hist[i // A]]]
        score = np.array([score[i // A] + ious[i] for i in keep])
        rows = torch.as_tensor([i for i in keep for _ in range(A)])
        reorder_lanes(st.bank, rows.tolist())
        head, mem = reorder_head(fs.head, rows), fs.mem.index_select(0, rows.to(fs.mem.device))
    best = int(np.argmax(score[:live]))
    acts, ious, obj_scores = hist[best]
    return OracleResult(video.name, float(stock[2:].mean()), float(np.mean(ious[2:])),
                        np.asarray(acts, np.int64), np.asarray(ious), np.asarray(obj_scores), beam)


def _key(bank, lane: int, A: int) -> tuple:
    """Lanes from one parent with the same stored frames hold the same bank."""
    return (lane // A, tuple(sorted(int(f) for f in bank.frame_idx[lane] if f >= 0)))


def format_oracle(rows: list[OracleResult]) -> str:
    lines = [f"{'video':<22}{'beam':>5}{'stock J':>8}{'oracle J':>9}{'gain':>9}{'lane-steps':>11}{'s':>7}"]
    for r in rows:
        lines.append(f"{r.video:<22}{r.beam:>5}{r.stock:>8.3f}{r.oracle:>9.3f}{r.gain:>+9.4f}"
                     f"{r.lane_steps:>11}{r.seconds:>7.1f}")
    return "\n".join(lines)


__all__ = ["OracleResult", "format_oracle", "oracle_search"]
