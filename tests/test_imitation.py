"""Imitation of the oracle: labels, replays, behaviour cloning, and lookahead values."""

import numpy as np
import pytest

from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.eval.metrics import iou as region_iou
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies.base import obs_size
from sam2rl_fast.rl import EpisodeBatch, FeatureCache, Lane
from sam2rl_fast.rl.env import prepare_videos
from sam2rl_fast.rl.imitation import (
    Demonstrations,
    behaviour_clone,
    blank_agent,
    branch_values,
    demonstrations,
    equivalent_actions,
    labels_from_values,
    margins,
    policy_actions,
)
from sam2rl_fast.rl.oracle import oracle_search
from sam2rl_fast.tracking.tracker import FastTracker

T, S = 10, 7


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")


@pytest.fixture(scope="module")
def clip():
    return generate_video("look-alike", 1_000_001, num_frames=T, height=128, width=128)


@pytest.fixture(scope="module")
def video(model, clip):
    return prepare_videos([(clip.frames, clip.masks, "look-alike-1")], model,
                          cache=FeatureCache(model, progress=False))[0]


def _obs(occupied, cond):
    o = np.zeros((1, obs_size(S)), np.float32)
    slots = o[0, : S * 8].reshape(S, 8)
    slots[:, 0], slots[:, 1] = occupied, cond
    return o


def test_equivalent_actions():
    occ = np.array([1, 1, 1, 0, 0, 1, 0], np.float32)
    cond = np.array([1, 0, 0, 0, 0, 0, 0], np.float32)
    o = np.repeat(_obs(occ, cond), 4, 0)
    got = equivalent_actions(o, np.array([0, 1, 4, 2]), S)
    drop = [True, True] + [False] * 6  # action 0 and the conditioning slot's action 1
    empty = [False, False, False, False, True, True, False, True]  # slots 3, 4, 6
    only2 = [False, False, True] + [False] * 5
    np.testing.assert_array_equal(got, np.array([drop, drop, empty, only2]))


def test_replayed_oracle_decisions_are_the_demonstrations(video, model):
    """The observations of a replay are the oracle's states: the labelled action is always
    allowed, the replay's IoUs are the search's (up to the batch's rounding)."""
    r = oracle_search(video, model, beam=2)
    b = EpisodeBatch([video], model, 1, obj=0)
    try:
        demos, ious = demonstrations(b, [Lane(0, 0, 0)], r.actions[None])
    finally:
        b.close()
    assert demos.obs.shape == (T - 2, obs_size(S)) and np.isfinite(demos.obs).all()
    assert demos.allowed[np.arange(T - 2), r.actions].all()
    np.testing.assert_allclose(ious[0, 2:], r.ious[2:], atol=2e-2)


def test_behaviour_cloning_fits_labels_against_the_prior():
    """Random observations, labels away from the stock action: the fitted argmax takes every
    label by the margin although the prior starts on the stock rule's action."""
    rng = np.random.default_rng(0)
    n = 40
    obs = rng.random((n, obs_size(S)), dtype=np.float32)
    obs[:, : S * 8].reshape(n, S, 8)[..., 0] = 1.0  # every slot occupied: one stock action
    obs[:, : S * 8].reshape(n, S, 8)[..., 1] = 0.0
    labels = rng.integers(0, S + 1, n)
    demos = Demonstrations(obs, equivalent_actions(obs, labels, S), np.ones(n, np.float32), ["v"] * n)
    ppo = blank_agent(S, fifo_prior=3.0, seed=0)
    assert (margins(ppo.policy, demos) > 0).mean() < 0.5  # before: mostly the stock action
    fit = behaviour_clone(ppo.policy, demos, steps=4000, lr=3e-3, margin=0.5)
    assert fit["accuracy"] == 1.0 and fit["min_margin"] > 0.5
    act = policy_actions(ppo.policy)(obs)
    assert demos.allowed[np.arange(n), act].all()


def test_cloned_agent_tracks_as_its_demonstrations_in_fast_tracker(video, model, clip, tmp_path):
    """Fitted to a demonstrated trajectory (keep the prompt only: drop every candidate), the
    agent file deployed in FastTracker takes those decisions from its own observations and
    gets the replay's IoUs, which differ from the stock rule's (so the check can fail)."""
    from sam2rl_fast.rl.agents import write_agent_file

    actions = np.zeros((1, T - 2), np.int64)
    b = EpisodeBatch([video], model, 1, obj=0)
    try:
        demos, ious = demonstrations(b, [Lane(0, 0, 0)], actions)
        stock = b.stock_ious([Lane(0, 0, 0)])[0]
    finally:
        b.close()
    ppo = blank_agent(S, fifo_prior=3.0, seed=0)
    fit = behaviour_clone(ppo.policy, demos, steps=3000)
    assert fit["accuracy"] == 1.0
    path = write_agent_file(ppo, tmp_path / "agent.zip", capacity=S, model=model, training={})
    res = FastTracker(clip.frames, agent=str(path), model=model, prompt={0: clip.masks[0, 0]}).run()
    m = res.masks[:, 0]
    got = np.array([float(region_iou(m[t], clip.masks[t, 0])) for t in range(2, T)])
    np.testing.assert_allclose(got, ious[0, 2:], atol=2e-2)
    assert np.abs(stock[2:] - ious[0, 2:]).max() > 0.05


def test_branch_values_score_the_policys_own_rollout(video, model):
    """Q(s_t, policy's action) is the policy's own return from t; forcing another action
    changes it where decisions matter; the labels keep the policy where nothing pays."""
    ppo = blank_agent(S, fifo_prior=3.0, seed=0)
    act = policy_actions(ppo.policy)
    frames = [1, 4, 7]
    out = branch_values(video, model, act, frames)
    q, pol = out["q"], out["policy"]
    assert q.shape == (3, S + 1) and np.isfinite(q).all()
    # the policy's own rollout, one lane
    b = EpisodeBatch([video], model, 1, obj=0)
    try:
        o = b.reset([Lane(0, 0, 0)])
        ious = np.ones(T)
        for t in range(1, T - 1):
            o, _, _, _ = b.step(act(o))
            ious[t + 1] = b.ious[0]
    finally:
        b.close()
    own = q[np.arange(3), pol]
    np.testing.assert_allclose(own, [ious[f + 1:].sum() for f in frames], atol=0.05)
    allowed, w = labels_from_values(out["obs"], pol, q, S, tolerance=1e9)
    assert allowed[np.arange(3), pol].all() and (w >= 0).all()
    best = labels_from_values(out["obs"], pol, q, S, tolerance=0.0)[0]
    assert best[np.arange(3), q.argmax(-1)].all()


def test_branch_values_hold_an_action_for_several_frames(video, model):
    """With `hold` k, lane (f, a) takes a on frames f..f+k-1, then the policy: its value is
    that of a one-lane rollout doing the same; a held choice differs from a single one."""
    act = policy_actions(blank_agent(S, fifo_prior=3.0, seed=0).policy)
    f, k = 2, 4
    held = branch_values(video, model, act, [f], hold=k)["q"][0]
    b = EpisodeBatch([video], model, 1, obj=0)
    try:
        o = b.reset([Lane(0, 0, 0)])
        ious = np.ones(T)
        for t in range(1, T - 1):
            o, _, _, _ = b.step(np.zeros(1, np.int64) if f <= t < f + k else act(o))
            ious[t + 1] = b.ious[0]
    finally:
        b.close()
    np.testing.assert_allclose(held[0], ious[f + 1:].sum(), atol=0.05)
    once = branch_values(video, model, act, [f], hold=1)["q"][0]
    assert abs(held[0] - once[0]) > 1e-3
    with pytest.raises(ValueError, match="hold"):
        branch_values(video, model, act, [f], hold=0)


def test_blank_agent_is_the_stock_rule_with_the_prior():
    occ = np.array([1, 1, 1, 1, 1, 1, 1], np.float32)
    cond = np.array([1, 0, 0, 0, 0, 0, 0], np.float32)
    o = _obs(occ, cond)
    o[0, : S * 8].reshape(S, 8)[:, 2] = [0.0, 0.06, 0.05, 0.04, 0.03, 0.02, 0.01]  # ages
    ppo = blank_agent(S, fifo_prior=3.0, seed=1)
    assert policy_actions(ppo.policy)(o)[0] == 2  # the oldest non-conditioning memory: slot 1


def test_heldout_table_compares_the_agent_with_every_rule_and_the_room():
    import evaluate_heldout  # train/evaluate_heldout.py (tests/conftest.py puts train/ on the path)

    rows = [{"suite": "drift", "sam2": 0.5 + 0.1 * i, "samurai": 0.5, "dam4sam": 0.4, "sam2long": 0.6,
             "agent": 0.6 + 0.1 * i, "oracle": 0.7 + 0.1 * i} for i in range(4)]
    txt = evaluate_heldout.table(rows)
    line = txt.splitlines()[2].split(" | ")
    assert line[0] == "| drift" and line[1] == "4"
    assert line[8].startswith("+0.1000 [+0.1000, +0.1000]")  # agent − sam2: +0.1 on every video
    assert line[-2] == "+0.200" and line[-1] == "50% |"  # room +0.2, half of it taken
    assert "oracle" not in evaluate_heldout.table([{k: v for k, v in r.items() if k != "oracle"} for r in rows])
