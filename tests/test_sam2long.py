"""SAM2Long (`agent="sam2long"`): the pathway bookkeeping on hand-made cases, the P = 1
reduction to the stock rule (bit for bit), and the tracker with several objects."""

import math

import numpy as np
import pytest
import torch

from sam2rl_fast import FastTracker
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.memory.bank import MemoryBank
from sam2rl_fast.memory.selection import StockMemoryRule
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import Sam2LongPolicy, make_policy
from sam2rl_fast.policies.sam2long import Branches, memory_weights, select_branches
from sam2rl_fast.tracking.pathways import (
    ModulatedMemoryBank,
    PathwayStep,
    reorder_lanes,
)

INF = math.inf
STORE_ALL = dict(iou_threshold=-INF, obj_score_threshold=-INF)


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")  # the bundled model


def _video(suite="mixed", seed=1_000_002, frames=8, size=96):
    v = generate_video(suite, seed, num_frames=frames, height=size, width=size)
    prompt = {k: v.masks[0, k] for k in range(v.masks.shape[1]) if v.masks[0, k].any()}
    return v, prompt


# ---------------------------------------------------------------- branch selection
def test_branches_are_the_top_p_of_cumulative_log_iou():
    # 2 objects, P = 2, K = 3; object 0's pathway 1 trails by log 2, object 1's pathways are even.
    scores = torch.tensor([[0.0, math.log(0.5)], [0.0, 0.0]], dtype=torch.float64)
    ious = torch.tensor([[[0.9, 0.5, 0.1], [0.99, 0.8, 0.2]],
                         [[0.3, 0.2, 0.1], [0.7, 0.6, 0.3]]])
    br = select_branches(scores, ious, torch.full((2, 2), 10.0), eps=0.0)
    # object 0: log .9 > log .5 > log .5 + log .99: both from pathway 0
    assert br.parents.tolist() == [[0, 0], [1, 1]] and br.cands.tolist() == [[0, 1], [0, 1]]
    expect = [[math.log(0.9), math.log(0.5)], [math.log(0.7), math.log(0.6)]]
    assert torch.allclose(br.scores, torch.tensor(expect, dtype=torch.float64), atol=1e-6)
    assert br.lanes().tolist() == [0, 0, 3, 3]  # lane = object * P + pathway
    # eps keeps a zero (or negative) IoU finite; ties go to the lower (pathway, candidate)
    br = select_branches(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[[0.0, -1.0, 0.0],
                         [0.0, 0.0, 0.0]]]), torch.ones(1, 2) * 10, eps=1e-6)
    assert br.parents.tolist() == [[0, 0]] and br.cands.tolist() == [[0, 1]]
    assert torch.isfinite(br.scores).all()


def test_first_frame_branches_come_from_pathway_zero_only():
    p = Sam2LongPolicy(pathways=3)
    p.reset(1, 7, StockMemoryRule())
    assert p.scores.tolist() == [[0.0, -INF, -INF]]
    ious = torch.tensor([[0.6, 0.9, 0.3]]).repeat(3, 1)  # the 3 lanes are copies of the prompt
    masks = torch.zeros(3, 3, 4, 4)
    masks[:, 0, :2] = masks[:, 1, 2:] = masks[:, 2, :, :2] = 1
    br = p.select(masks, ious, torch.full((3, 1), 10.0))
    assert br.lanes().tolist() == [0, 0, 0] and br.cands.tolist() == [[1, 0, 2]]
    assert torch.isfinite(p.scores).all() and p.best_lanes() == [0]


def test_uncertainty_rule_keeps_distinct_masks():
    # Pathway 1's best candidate is pathway 0's best mask again; its score is second.
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[:, :1] = True
    c = ~a
    masks = torch.stack([torch.stack([a, b, c]), torch.stack([a, c, b])])[None]  # [1, P, K, h, w]
    scores = torch.tensor([[0.0, -0.01]], dtype=torch.float64)
    ious = torch.tensor([[[0.9, 0.5, 0.4], [0.9, 0.3, 0.2]]])
    sure = select_branches(scores, ious, torch.tensor([[5.0, 5.0]]), masks, uncertainty_threshold=2.0)
    assert list(zip(sure.parents[0].tolist(), sure.cands[0].tolist())) == [(0, 0), (1, 0)]
    unsure = select_branches(scores, ious, torch.tensor([[1.0, -3.0]]), masks, uncertainty_threshold=2.0)
    assert list(zip(unsure.parents[0].tolist(), unsure.cands[0].tolist())) == [(0, 0), (0, 1)]
    # a near-duplicate counts as the same mask (IoU >= distinct_iou), not a distinct one
    loose = select_branches(scores, ious, torch.tensor([[1.0, 1.0]]), masks, distinct_iou=0.2)
    assert loose.parents[0].tolist() == [0, 0] and loose.cands[0].tolist() == [0, 2]  # b ~ a
    # fewer distinct masks than pathways (an absent object: every mask empty): the best fill up
    empty = torch.zeros_like(masks)
    fill = select_branches(scores, ious, torch.tensor([[-8.0, -9.0]]), empty)
    assert list(zip(fill.parents[0].tolist(), fill.cands[0].tolist())) == [(0, 0), (1, 0)]


# ---------------------------------------------------------------- bank copies and memory
def _bank(B=3, S=3, R=2):
    bank = MemoryBank(B, num_tokens=4, capacity=S, ptr_capacity=R, dtype=torch.float32)
    bank.feats.copy_(torch.randn_like(bank.feats))
    bank.ptrs.copy_(torch.randn_like(bank.ptrs))
    bank.frame_idx.copy_(torch.arange(B * S).reshape(B, S))
    bank.is_cond[:, 0] = True
    bank.obj_score.copy_(torch.randn(B, S))
    bank.iou.copy_(torch.rand(B, S))
    bank.present.copy_(bank.obj_score > 0)
    bank.ptr_frame.copy_(torch.arange(B * R).reshape(B, R))
    bank.ptr_is_cond[:, 0] = True
    return bank


def test_reorder_lanes_makes_each_lane_a_copy_of_its_parent():
    bank = _bank()
    names = ["feats", "ptrs", "frame_idx", "is_cond", "obj_score", "iou", "present", "ptr_frame",
             "ptr_is_cond"]
    before = {k: getattr(bank, k).clone() for k in names}
    feats = bank.feats
    reorder_lanes(bank, [2, 2, 0])
    for k in names:
        assert torch.equal(getattr(bank, k), before[k][[2, 2, 0]]), k
    assert bank.feats is feats  # in place: views and references stay valid
    reorder_lanes(bank, [0, 1, 2])  # identity: nothing moves
    assert torch.equal(bank.frame_idx, before["frame_idx"][[2, 2, 0]])
    for bad in ([0, 1], [0, 1, 3], [-1, 0, 1]):
        with pytest.raises(ValueError, match="reorder_lanes"):
            reorder_lanes(bank, bad)


def test_memory_is_the_most_recent_frames_that_pass_the_thresholds():
    p = Sam2LongPolicy(pathways=1, iou_threshold=0.5, obj_score_threshold=0.0)
    p.reset(1, 8, StockMemoryRule())  # 1 prompt + 6 recent, one slot to spare
    bank = MemoryBank(1, 4, capacity=8, dtype=torch.float32)
    mem = torch.zeros(1, 64, 2, 2)
    bank.append(mem, [0], frame_idx=0, is_cond=True, obj_score=torch.tensor([10.0]))
    stored = []
    for f, (iou, score) in enumerate([(0.9, 1), (0.4, 1), (0.9, -1), (0.8, 2)] + [(0.7, 1)] * 6, 1):
        slot = p.memory_slots(bank, [iou], [score])[0]
        assert (slot >= 0) == (iou > 0.5 and score > 0), f
        if slot >= 0:
            bank.append(mem, [slot], frame_idx=f, obj_score=torch.tensor([float(score)]),
                        iou=torch.tensor([iou]))
            stored.append(f)
    assert sorted(bank.slot_map(0, cond=False)) == stored[-6:] == [5, 6, 7, 8, 9, 10]
    assert bank.free_slots(0) == [7]  # never more than num_maskmem - 1 recent memories
    sel = p.read_rule.select(bank, 11)
    assert [int(bank.frame_idx[0, s]) for s in sel.slots[0]] == [0, 5, 6, 7, 8, 9, 10]
    assert sel.tslots[0] == [6, 5, 4, 3, 2, 1, 0]


def test_memory_weights_map_object_scores_onto_the_modulation_range():
    w = memory_weights(torch.tensor([10.0, 0.0, 5.0]), 0.95, 1.05)
    assert torch.allclose(w, torch.tensor([1.05, 0.95, 1.0], dtype=torch.float64))
    assert memory_weights(torch.tensor([3.0, 3.0]), 0.95, 1.05).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- the tracker
def test_one_pathway_storing_everything_is_the_stock_rule_bit_for_bit(model):
    v, prompt = _video()
    assert len(prompt) == 2
    ref = FastTracker(v.frames, agent="sam2", model=model, prompt=prompt).run()
    pol = Sam2LongPolicy(pathways=1, modulation=(1.0, 1.0), **STORE_ALL)
    out = FastTracker(v.frames, agent=pol, model=model, prompt=prompt).run()
    for k in ("masks", "scores", "ious", "decisions"):
        assert np.array_equal(getattr(out, k), getattr(ref, k)), k


def test_pathways_copy_their_parents_memory_and_add_log_iou(model):
    v, prompt = _video()
    pol = Sam2LongPolicy(pathways=3, eps=1e-6, **STORE_ALL)
    tr = FastTracker(v.frames, agent=pol, model=model, prompt=prompt)
    assert isinstance(tr.step, PathwayStep)
    bank, prev = None, None
    for fr in tr:
        bank = tr.step.bank
        assert bank.num_objects == 2 * 3 and isinstance(bank, ModulatedMemoryBank)
        if prev is not None:
            parents = tr.step.last_parents.tolist()
            assert [p // 3 for p in parents] == [0, 0, 0, 1, 1, 1]  # within each object
            for lane, par in enumerate(parents):
                new = {int(bank.frame_idx[lane, s]): s for s in bank.occupied(lane)}
                old = {int(prev["frame_idx"][par, s]): s for s in range(bank.capacity)
                       if prev["frame_idx"][par, s] >= 0}
                assert fr.index in new and set(new) - {fr.index} <= set(old)
                for g in set(new) - {fr.index}:  # inherited memories: the parent's, exactly
                    assert torch.equal(bank.feats[lane, new[g]], prev["feats"][par, old[g]])
                    assert bank.iou[lane, new[g]] == prev["iou"][par, old[g]]
                o, p = divmod(lane, 3)  # score = parent's + log(IoU + eps)
                gain = pol.scores[o, p].item() - prev["scores"][o, par % 3].item()
                iou = max(float(bank.iou[lane, new[fr.index]]), 0.0)
                assert math.exp(gain) - 1e-6 == pytest.approx(iou, abs=1e-5)
            for o, lane in enumerate(pol.best_lanes()):  # the output is the best pathway
                assert fr.ious[o] == bank.iou[lane, bank.slot_map(lane, cond=False)[fr.index]]
                assert tr.bank_of(tr.obj_ids[o]) == (bank, lane)
        prev = {"frame_idx": bank.frame_idx.clone(), "feats": bank.feats.clone(),
                "iou": bank.iou.clone(), "scores": pol.scores.clone()}
    assert torch.isfinite(pol.scores).all()


def test_forced_branches_permute_or_rerun_the_lanes_exactly(model, monkeypatch):
    """One step from the same state with hand-picked branches: each lane kept (A), the
    lanes permuted (B: the heads' rows reordered) and a parent taken twice (C: the heads
    run again on the parents' features)."""
    v, prompt = _video()
    pol = Sam2LongPolicy(**STORE_ALL)
    tr = FastTracker(v.frames, agent=pol, model=model, prompt=prompt)
    frames = iter(tr)
    for _ in range(4):  # the prompt and 3 tracked frames: the pathways differ
        next(frames)
    step, f = tr.step, 4
    with torch.inference_mode():
        feats = step.expand(step.encode_image(v.frames[f]), step.num_lanes)
        keys = [k for k, t in vars(step.bank).items() if isinstance(t, torch.Tensor)]
        state = {k: getattr(step.bank, k).clone() for k in keys}, pol.scores.clone()

    def run(pattern, second=()):  # pattern: parent pathway per new pathway (both objects)
        with torch.inference_mode():
            for k, t in state[0].items():
                getattr(step.bank, k).copy_(t)
            pol.scores = state[1].clone()

            def select(multimasks, ious, obj_scores):
                order = torch.argsort(ious.cpu(), dim=-1, descending=True)
                par = torch.tensor([pattern, pattern])
                lanes = par + torch.tensor([[0], [3]])
                cands = order[lanes, 0]
                for j in second:
                    cands[:, j] = order[lanes[:, j], 1]
                return Branches(par, cands, pol.scores.clone())

            monkeypatch.setattr(pol, "select", select)
            head, slots = step._track(f, feats, None, None, frozenset())
            return head, {k: getattr(step.bank, k).clone() for k in keys}

    a_head, a_bank = run([0, 1, 2])
    b_head, b_bank = run([2, 0, 1])
    perm = [2, 0, 1, 5, 3, 4]
    for k in ("low_res_masks", "ious", "obj_ptr", "object_score_logits"):
        assert torch.equal(getattr(b_head, k), getattr(a_head, k)[perm]), k
    for k in keys:  # (empty slots and their metadata: NaN)
        torch.testing.assert_close(b_bank[k], a_bank[k][perm], rtol=0, atol=0, equal_nan=True)
    c_head, c_bank = run([0, 0, 1], second=[1])
    for new, old in [(0, 0), (2, 1), (3, 3), (5, 4)]:  # the same branch as in A
        assert torch.allclose(c_head.low_res_masks[new], a_head.low_res_masks[old], atol=1e-4)
        used = c_bank["frame_idx"][new] >= 0
        assert torch.equal(c_bank["frame_idx"][new], a_bank["frame_idx"][old])
        assert torch.allclose(c_bank["feats"][new, used].float(), a_bank["feats"][old, used].float(),
                              atol=1e-2)
    for new, par in [(1, 0), (4, 3)]:  # parent 0's second mask, with parent 0's memory
        assert c_head.choice[new] == torch.argsort(a_head.ious[par], descending=True)[1]
        old = state[0]
        for s in range(step.bank.capacity):
            g = int(c_bank["frame_idx"][new, s])
            if 0 <= g < f:
                src = (old["frame_idx"][par] == g).nonzero().item()
                assert torch.equal(c_bank["feats"][new, s], old["feats"][par, src])
    frames.close()


def test_several_objects_corrections_and_later_objects(model):
    v, prompt = _video(frames=8)
    prompts = {0: {0: prompt[0]}, 2: {1: v.masks[2, 1]}, 6: {0: v.masks[6, 0]}}
    ref = FastTracker(v.frames, agent="sam2", model=model, prompt=prompts).run()
    tr = FastTracker(v.frames, agent="sam2long", model=model, prompt=prompts)
    out = tr.run()
    assert out.masks.shape == ref.masks.shape and out.decisions[:2, 1].tolist() == [-2, -2]
    assert np.array_equal(out.masks[6, 0], ref.masks[6, 0])  # the correction's own output
    assert np.array_equal(out.masks[2, 1], ref.masks[2, 1])  # object 1's prompt
    assert np.array_equal(out.masks[0], ref.masks[0])
    for c in tr.cohorts:  # every stored tracked memory passed the thresholds
        bank, pol = c.step.bank, c.policy
        for lane in range(bank.num_objects):
            for s in bank.slot_map(lane, cond=False).values():
                assert bank.iou[lane, s] > pol.iou_threshold and bank.obj_score[lane, s] > 0
    assert len(tr.cohorts) == 2 and tr.cohorts[0].step.bank.num_objects == 3


def test_modulated_gather_scales_each_memory_frame(model):
    v, prompt = _video(frames=4)
    tr = FastTracker(v.frames, agent=Sam2LongPolicy(**STORE_ALL), model=model, prompt=prompt)
    tr.run()
    bank, pol = tr.step.bank, tr.policy
    sel = pol.read_rule.select(bank, 4)
    mod, pos, cu = bank.gather_varlen(sel, tr.step.enc)
    raw, pos0, cu0 = MemoryBank.gather_varlen(bank, sel, tr.step.enc)
    assert cu == cu0 and torch.equal(pos, pos0)
    HW = bank.num_tokens
    for o in range(bank.num_objects):
        w = memory_weights(bank.obj_score[o, sel.slots[o]], *pol.modulation)
        for i, wi in enumerate(w.tolist()):
            r = slice(cu[o] + i * HW, cu[o] + (i + 1) * HW)
            assert torch.allclose(mod[r], raw[r] * wi)
        r = slice(cu[o] + len(w) * HW, cu[o + 1])  # pointers unscaled
        assert torch.equal(mod[r], raw[r])


def test_options_are_checked():
    assert isinstance(make_policy("sam2long"), Sam2LongPolicy) and make_policy("SAM2Long").pathways == 3
    for kw, msg in [({"pathways": 0}, "pathways"), ({"pathways": 1.5}, "pathways"),
                    ({"pathways": True}, "pathways"), ({"iou_threshold": math.nan}, "iou_threshold"),
                    ({"distinct_iou": 0.0}, "distinct_iou"), ({"distinct_iou": 1.5}, "distinct_iou"),
                    ({"eps": 0.0}, "eps"), ({"modulation": (1.1, 0.9)}, "low 1.1 > high"),
                    ({"modulation": (0.0, 1.0)}, "modulation low"), ({"modulation": 1.0}, "pair"),
                    ({"uncertainty_threshold": "2"}, "uncertainty_threshold")]:
        with pytest.raises(ValueError, match=msg):
            Sam2LongPolicy(**kw)
    with pytest.raises(ValueError, match="at least 2 memory slots"):
        Sam2LongPolicy().reset(1, 1, StockMemoryRule())


def test_cli_eval_runs_sam2long(tmp_path, capsys):
    from sam2rl_fast.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--suite", "occlusion", "--agent", "sam2long", "--videos", "1", "--frames",
                 "3", "--size", "64", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert "sam2long" in capsys.readouterr().out and (out / "summary.json").is_file()
