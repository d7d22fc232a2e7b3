"""The memory-control environment: gymnasium API, determinism, rewards, actions, batching."""

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.env_checker import check_env

from sam2rl_fast import FastTracker
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.eval.metrics import iou
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import VectorPolicy
from sam2rl_fast.rl import (
    EpisodeBatch,
    FeatureCache,
    Lane,
    MemoryControlEnv,
    MemoryControlVecEnv,
)
from sam2rl_fast.rl.env import prepare_videos

T = 10


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")


@pytest.fixture(scope="module")
def video():
    return generate_video("occlusion", 1_000_000, num_frames=T, height=128, width=128)


@pytest.fixture(scope="module")
def cache(model):
    return FeatureCache(model, progress=False)


def _env(video, model, **kw):
    return MemoryControlEnv(video.frames, video.masks, model, progress=False, **kw)


def test_check_env_passes(video, model):
    env = _env(video, model, reward="improvement")
    check_env(env)
    assert env.observation_space.shape == (64,) and env.action_space.n == 8


def test_features_are_the_image_encoders(model, video, cache):
    feats = cache.get(video.frames)
    assert cache.get(video.frames) is feats  # computed once
    from sam2rl_fast.tracking.step import TrackingStep

    with torch.inference_mode():
        vf, vp, sizes = TrackingStep(model, None).encode_image(video.frames[3])
    got = feats.frames([3])
    for a, b in zip(got[0], vf):
        torch.testing.assert_close(a, b)
    assert got[2] == [tuple(s) for s in sizes]


def test_disk_cache_round_trip(model, video, tmp_path):
    a = FeatureCache(model, tmp_path, progress=False).get(video.frames)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    b = FeatureCache(model, tmp_path, progress=False).get(video.frames)  # read back, not recomputed
    for x, y in zip(a.vf, b.vf):
        assert torch.equal(x, y)


def _rollout(env, actions, **reset_kw):
    obs, info = env.reset(**reset_kw)
    out = [obs]
    rewards, infos = [], []
    for a in actions:
        obs, r, term, trunc, inf = env.step(a)
        out.append(obs)
        rewards.append(r)
        infos.append(inf)
        if term:
            break
    return np.stack(out), np.array(rewards), infos, info


def test_env_is_deterministic_for_a_seed(video, model):
    env = _env(video, model, random_window=True, episode_length=6)
    acts = [3, 0, 5, 2]
    a = _rollout(env, acts, seed=7)
    b = _rollout(env, acts, seed=7)
    assert a[3] == b[3]  # same window
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    starts = {_rollout(env, [0], seed=s)[3]["start"] for s in range(12)}
    assert len(starts) > 1  # windows do move with the seed


def test_reward_is_the_metric_iou_of_the_tracker_with_the_same_decisions(video, model):
    env = _env(video, model, reward="iou")
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 8, T - 2)
    _, rewards, infos, _ = _rollout(env, actions, options={"start": 0, "obj": 0})
    assert len(rewards) == T - 2 and infos[-1]["frame"] == T - 1

    it = iter(list(actions) + [0])  # the tracker also decides for the last frame
    agent = VectorPolicy(lambda obs: np.array([next(it)]), capacity=7)
    res = FastTracker(video.frames, agent=agent, model=model, prompt={0: video.masks[0, 0]}).run()
    expect = iou(res.masks[2:, 0], video.masks[2:, 0])
    np.testing.assert_allclose(rewards, expect, atol=1e-6)
    np.testing.assert_array_equal([i["slot"] for i in infos], res.decisions[1:-1, 0])
    assert not np.isnan(rewards).any()


def test_the_tracker_shows_an_agent_the_observations_it_was_trained_on(video, model):
    """An agent deployed in FastTracker sees, decision by decision, the env's observations."""
    env = _env(video, model, reward="iou")
    actions = np.random.default_rng(1).integers(0, 8, T - 2)
    obs, _ = env.reset(options={"start": 0, "obj": 0})
    env_obs = [obs]
    for a in actions[:-1]:
        env_obs.append(env.step(a)[0])
    seen, it = [], iter(actions)

    def predict(o):
        seen.append(o[0].copy())
        return np.array([next(it, 0)])

    FastTracker(video.frames, agent=VectorPolicy(predict, capacity=7), model=model,
                prompt={0: video.masks[0, 0]}).run()
    assert len(seen) >= len(env_obs)
    for t, o in enumerate(env_obs):
        np.testing.assert_allclose(seen[t], o, atol=1e-6, err_msg=f"decision {t}")


def test_actions_do_what_they_say_to_the_bank(video, model):
    env = _env(video, model)
    env.reset(options={"start": 0, "obj": 0})
    bank = env.batch.step_.bank
    assert bank.frame_idx[0].tolist() == [0, -1, -1, -1, -1, -1, -1] and bool(bank.is_cond[0, 0])
    env.step(4)  # frame 1 -> slot 3
    assert bank.frame_idx[0, 3] == 1
    env.step(0)  # frame 2 dropped
    assert 2 not in bank.frame_idx[0].tolist()
    env.step(1)  # slot 0 is the prompt: never replaced, the candidate is dropped
    assert bank.frame_idx[0, 0] == 0 and bool(bank.is_cond[0, 0]) and 3 not in bank.frame_idx[0].tolist()
    env.step(4)  # replaces frame 1 in slot 3
    assert bank.frame_idx[0].tolist() == [0, -1, -1, 4, -1, -1, -1]
    with pytest.raises(ValueError, match="outside"):
        env.step(8)


def test_batched_env_equals_single_envs(video, model, cache):
    other = generate_video("distractor", 1_000_000, num_frames=T, height=128, width=128)
    items = [(video.frames, video.masks, "a"), (other.frames, other.masks, "b")]
    lanes = [Lane(0, 0, 0), Lane(1, 0, 0), Lane(0, 0, 0)]
    venv = MemoryControlVecEnv(items, 3, model, cache=cache, progress=False, reward="improvement")
    rng = np.random.default_rng(1)
    acts = rng.integers(0, 8, (T - 2, 3))
    obs = [venv.reset(lanes)]
    rews = []
    for a in acts:
        o, r, d, infos = venv.step(a)
        rews.append(r)
        obs.append(np.stack([i["terminal_observation"] for i in infos]) if d[0] else o)
    assert d.all()  # episodes end together
    for i, ln in enumerate(lanes):
        v = (video, other)[ln.video]
        single = _env(v, model, reward="improvement")
        o_s, r_s, _, _ = _rollout(single, acts[:, i], options={"start": 0, "obj": 0})
        np.testing.assert_allclose(np.stack(obs)[:, i], o_s, atol=1e-4)
        np.testing.assert_allclose(np.array(rews)[:, i], r_s, atol=1e-4)


def test_improvement_reward_subtracts_the_stock_rule(video, model):
    env = _env(video, model, reward="improvement")
    _, rewards, infos, _ = _rollout(env, [2, 3, 4, 5, 6, 7, 2, 3], options={"start": 0, "obj": 0})
    res = FastTracker(video.frames, agent="sam2", model=model, prompt={0: video.masks[0, 0]}).run()
    stock = iou(res.masks[:, 0], video.masks[:, 0])
    np.testing.assert_allclose([i["stock_iou"] for i in infos], stock[2:], atol=1e-6)
    np.testing.assert_allclose(rewards, [i["iou"] - i["stock_iou"] for i in infos], atol=1e-6)


def test_bad_input_is_a_clear_error(video, model, cache):
    with pytest.raises(ValueError, match="gt_masks"):
        prepare_videos([(video.frames, video.masks[:5])], model, cache=cache)
    vids = prepare_videos([(video.frames, video.masks)], model, cache=cache)
    with pytest.raises(ValueError, match="episode_length"):
        EpisodeBatch(vids, model, episode_length=2)
    with pytest.raises(ValueError, match="shorter"):
        EpisodeBatch(vids, model, episode_length=T + 1)
    with pytest.raises(ValueError, match="reward"):
        EpisodeBatch(vids, model, reward="return")
    with pytest.raises(ValueError, match="object 3"):
        EpisodeBatch(vids, model, obj=3)
    empty = video.masks.copy()
    empty[0] = False
    with pytest.raises(ValueError, match="not visible"):
        MemoryControlEnv(video.frames, empty, model, progress=False).reset(seed=0)
    b = EpisodeBatch(vids, model)
    with pytest.raises(RuntimeError, match="reset"):
        b.step([0])


def test_memory_headroom_measures_fixed_rules_against_stock(video, model, cache):
    from sam2rl_fast.rl.headroom import memory_headroom

    vids = prepare_videos([(video.frames, video.masks, "v")], model, cache=cache)
    (row,) = memory_headroom(vids, model, samples=3, progress=False)
    env = _env(video, model, reward="improvement")
    _, r, _, _ = _rollout(env, [0] * (T - 2), options={"start": 0, "obj": 0})
    assert row.drop == pytest.approx(r.mean(), abs=1e-6)  # "drop" = always action 0
    assert row.random_best >= row.random_mean and np.isfinite(row.stock) and row.max_pixels >= 0


def test_bf16_episodes_track_as_fp32_ones(video, model, cache):
    eps = prepare_videos([(video.frames, video.masks, "v")], model, cache=cache, progress=False)
    acts = np.random.default_rng(5).integers(0, 8, (T - 2, 4))
    ious = {}
    for precision in ("fp32", "bf16"):
        b = EpisodeBatch(eps, model, 4, reward="iou", precision=precision)
        b.reset([Lane(0, 0, 0)] * 4)
        ious[precision] = np.stack([b.step(a)[1] for a in acts])
        b.close()
    assert ious["fp32"].mean() > 0.3  # the target is tracked
    assert np.abs(ious["bf16"] - ious["fp32"]).mean() <= 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        EpisodeBatch(eps, model, 4, precision="fp16")
