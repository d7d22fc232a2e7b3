"""Agent files are data: loading one never runs code from it."""

import base64
import io
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch

from sam2rl_fast.policies.agent_file import AgentFileError, load_sb3, write_metadata
from sam2rl_fast.policies.base import obs_size


class _Marker:
    """Unpickling this writes a file: the proof that a load ran code from the agent file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path):
    with open(path, "w") as fh:
        fh.write("ran")
    return 0


class _Env(gym.Env):
    def __init__(self, capacity=7):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size(capacity),), np.float32)
        self.action_space = gym.spaces.Discrete(capacity + 1)

    def reset(self, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, True, False, {}


@pytest.fixture(scope="module")
def agent_zip(tmp_path_factory):
    from stable_baselines3 import PPO

    from sam2rl_fast.policies.policy_net import SlotPolicy
    from sam2rl_fast.rl.training import TrainConfig

    cfg = TrainConfig(d_model=32, fifo_prior=1.5, n_steps=8, batch_size=8, seed=3)
    ppo = PPO(SlotPolicy, _Env(), n_steps=cfg.n_steps, batch_size=cfg.batch_size, seed=cfg.seed,
              learning_rate=cfg.learning_rate, clip_range=cfg.clip_range, device="cpu",
              policy_kwargs=dict(capacity=7, d_model=cfg.d_model, fifo_prior=cfg.fifo_prior))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ppo.policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("agent") / "agent.zip"
    ppo.save(path)
    import dataclasses

    write_metadata(path, capacity=7, training={"config": dataclasses.asdict(cfg)})
    obs = np.random.default_rng(0).uniform(-1, 1.5, (64, obs_size(7))).astype(np.float32)
    return path, obs, ppo.predict(obs, deterministic=True)[0]


def _rewrite(src, dst, member, content: bytes):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for name in zi.namelist():
            zo.writestr(name, content if name == member else zi.read(name))


def test_a_pickled_object_in_data_is_never_run(agent_zip, tmp_path):
    path, obs, actions = agent_zip
    marker = tmp_path / "ran.txt"
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    evil = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    for key in ("policy_class", "observation_space", "lr_schedule", "clip_range"):
        data[key] = {":type:": "<class 'object'>", ":serialized:": evil}
    bad = tmp_path / "evil.zip"
    _rewrite(path, bad, "data", json.dumps(data).encode())
    agent, meta = load_sb3(bad)
    assert not marker.exists()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], actions)
    assert agent.policy.features_extractor is not None and meta["capacity"] == 7


def test_the_loaded_agent_is_the_saved_one(agent_zip):
    from stable_baselines3 import PPO

    path, obs, actions = agent_zip
    agent, _ = load_sb3(path)
    ref = PPO.load(str(path), device="cpu")  # our own file: safe to unpickle here
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], actions)
    for (ka, va), (kb, vb) in zip(agent.policy.state_dict().items(), ref.policy.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert agent.num_timesteps == ref.num_timesteps and agent.n_steps == ref.n_steps
    assert agent.clip_range(1.0) == ref.clip_range(1.0) and agent.lr_schedule(1.0) == ref.lr_schedule(1.0)
    assert str(agent.policy.optimizer.state_dict()) == str(ref.policy.optimizer.state_dict())


@pytest.mark.parametrize("member", ["policy.pth", "policy.optimizer.pth"])
def test_weights_that_carry_code_are_refused(agent_zip, tmp_path, member):
    path, _, _ = agent_zip
    marker = tmp_path / "ran.txt"
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": _Marker(marker)}, buf)
    bad = tmp_path / "evil.zip"
    _rewrite(path, bad, member, buf.getvalue())
    with pytest.raises(AgentFileError, match="not plain weights"):
        load_sb3(bad)
    assert not marker.exists()


def test_weights_of_another_network_are_refused(agent_zip, tmp_path):
    path, _, _ = agent_zip
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    bad = tmp_path / "other.zip"
    _rewrite(path, bad, "policy.pth", buf.getvalue())
    with pytest.raises(AgentFileError, match="do not fit"):
        load_sb3(bad)


def test_a_run_state_is_read_without_running_code(tmp_path):
    import random

    from sam2rl_fast.rl.resume import load_run_state

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "ep_info_buffer": [{"r": np.float64(0.5), "l": 22}], "lanes": [(0, np.int64(3))]}
    good = tmp_path / "good.state.pt"
    torch.save(state, good)
    back = load_run_state(good)
    assert torch.equal(back["torch"], state["torch"]) and back["python"] == state["python"]
    assert np.array_equal(back["numpy"][1], state["numpy"][1]) and back["ep_info_buffer"] == state["ep_info_buffer"]
    marker = tmp_path / "ran.txt"
    bad = tmp_path / "bad.state.pt"
    torch.save({**state, "x": _Marker(marker)}, bad)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_run_state(bad)
    assert not marker.exists()
