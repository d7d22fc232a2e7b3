"""ONNX export of trained agents: parity with SB3, metadata, errors, tracker equivalence.

One tiny PPO agent is trained for the module (a few hundred steps, ~10 s) and exported
once. Parity is checked on observations recorded from real episodes (random actions, so
banks of every kind) plus random vectors, far outside what training saw.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sam2rl_fast import FastTracker
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.export.agent import (
    FORMAT,
    OnnxPolicy,
    add_export_args,
    export_agent,
    export_cli,
    read_metadata,
)
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import (
    OBS_LAYOUT,
    ObservationLayoutError,
    make_policy,
    obs_size,
)
from sam2rl_fast.rl.agents import AgentFileError, Sb3Policy, load_sb3

ROOT = Path(__file__).resolve().parents[1]
CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(agent zip, its ONNX export, SB3 PPO, metadata, training config)."""
    from sam2rl_fast.rl.training import TrainConfig, run_training

    out = tmp_path_factory.mktemp("agent")
    cfg = TrainConfig(mode="per-video", suites=["occlusion"], split="heldout", num_videos=1,
                      num_envs=8, total_steps=8 * 22 * 3, n_steps=22, batch_size=88, n_epochs=2,
                      checkpoint_every=0)
    agent_zip = run_training(cfg, out, progress=False, log=lambda *a: None)[0]
    onnx_path = export_agent(agent_zip, out / "agent.onnx")
    ppo, meta = load_sb3(agent_zip)
    return agent_zip, onnx_path, ppo, meta, cfg


@pytest.fixture(scope="module")
def fifo(tmp_path_factory):
    """As `trained`, with the policy started at the stock rule (`fifo_prior`):
    (agent zip, ONNX export, SB3 PPO, metadata, training config)."""
    from sam2rl_fast.rl.training import TrainConfig, run_training

    out = tmp_path_factory.mktemp("fifo")
    cfg = TrainConfig(mode="per-video", suites=["occlusion"], split="heldout", num_videos=1,
                      num_envs=8, total_steps=8 * 22 * 2, n_steps=22, batch_size=88, n_epochs=2,
                      checkpoint_every=0, fifo_prior=4.0, check_headroom=False, eval_videos=0)
    agent_zip = run_training(cfg, out, progress=False, log=lambda *a: None)[0]
    ppo, meta = load_sb3(agent_zip)
    return agent_zip, export_agent(agent_zip, out / "agent.onnx"), ppo, meta, cfg


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")


@pytest.fixture(scope="module")
def observations(trained, model):
    """[N >= 10,000, obs_size]: recorded from real episodes, then uniform in [-1, 1.5]."""
    from sam2rl_fast.rl.env import MemoryControlVecEnv
    from sam2rl_fast.rl.training import suite_items

    meta, cfg = trained[3:]
    env = MemoryControlVecEnv(suite_items(cfg), 16, model, capacity=meta["capacity"],
                              progress=False, seed=1)
    rng = np.random.default_rng(0)
    recorded = [env.reset()]
    for _ in range(2 * 22 - 1):  # two whole episodes per lane (resets included)
        obs, _, _, _ = env.step(rng.integers(0, meta["num_actions"], env.num_envs))
        recorded.append(obs)
    env.close()
    recorded = np.concatenate(recorded).astype(np.float32)
    assert recorded.shape == (16 * 44, meta["obs_size"])
    assert np.isfinite(recorded).all() and recorded.std(0).max() > 0
    rand = rng.uniform(-1.0, 1.5, (10_000, meta["obs_size"])).astype(np.float32)
    return recorded, rand


VIDEO = {"suite": "occlusion", "seed": 1_000_000, "num_frames": 12, "height": 256, "width": 256}


@pytest.fixture(scope="module")
def video():
    return generate_video(VIDEO["suite"], VIDEO["seed"], num_frames=VIDEO["num_frames"],
                          height=VIDEO["height"], width=VIDEO["width"])


@pytest.fixture(scope="module")
def decisive(trained, model, video, tmp_path_factory):
    """The trained agent with a random, larger action head: a few hundred PPO steps leave the
    policy near-uniform (it drops every candidate of the test video), which would let the
    tracker comparison pass without exercising the slot decisions. Seeds are tried until
    the SB3 agent stores memories in several different slots on the video.

    (agent zip, ONNX export, SB3 PPO, SB3 tracking result)."""
    from sam2rl_fast.rl.agents import write_metadata

    out = tmp_path_factory.mktemp("decisive")
    for seed in range(16):
        ppo, meta = load_sb3(trained[0])
        with torch.no_grad():
            w = ppo.policy.action_net.score.weight
            w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
        path = out / f"decisive{seed}.zip"
        ppo.save(path)
        write_metadata(path, capacity=meta["capacity"], model=model,
                       training={**meta["training"], "action_head": f"random, seed {seed}"})
        res = FastTracker(video.frames, agent=path, model=model, prompt={0: video.masks[0, 0]}).run()
        if len(set(res.decisions[1:, 0].tolist())) >= 3:
            return path, export_agent(path, out / "decisive.onnx"), load_sb3(path)[0], res
    pytest.fail("no action head among 16 seeds makes varied decisions on the test video")


def sb3_reference(ppo, obs):
    with torch.no_grad():
        probs = ppo.policy.get_distribution(torch.as_tensor(obs)).distribution.probs.numpy()
    return ppo.predict(obs, deterministic=True)[0], probs


# ---- export and parity ----------------------------------------------------------------------


def test_file_passes_checker_and_carries_metadata(trained):
    agent_zip, onnx_path, _, meta, _ = trained
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert not list(onnx_path.parent.glob("*.data"))  # self-contained: weights inside
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    md = read_metadata(onnx_path)
    assert md["format"] == FORMAT and md["layout"] == OBS_LAYOUT == meta["layout"]
    assert int(md["capacity"]) == meta["capacity"] == 7
    assert int(md["obs_size"]) == obs_size(7) and int(md["num_actions"]) == 8
    assert json.loads(md["model"]) == meta["model"] and meta["model"] is not None
    training = json.loads(md["training"])
    assert training == meta["training"] and training["timesteps"] >= 8 * 22 * 3
    assert md["source"] == agent_zip.name
    # inputs/outputs as documented: dynamic batch
    g = proto.graph
    assert [i.name for i in g.input] == ["obs"] and [o.name for o in g.output] == ["action", "probs"]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert isinstance(dims(g.input[0])[0], str) and dims(g.input[0])[1] == obs_size(7)
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert g.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(g.output[1])[1] == 8


@pytest.mark.parametrize("which", ["trained", "decisive", "fifo"])
def test_actions_and_probs_match_sb3(which, request, observations):
    onnx_path, ppo = request.getfixturevalue(which)[1:3]
    pol = OnnxPolicy(onnx_path, providers=CPU)
    assert pol.provider == "CPUExecutionProvider" and "CPUExecutionProvider" in repr(pol)
    recorded, rand = observations
    for obs in (recorded, rand):
        want_act, want_probs = sb3_reference(ppo, obs)
        act, probs = pol.act(obs)
        assert act.dtype == np.int64 and probs.dtype == np.float32
        np.testing.assert_array_equal(act, want_act)
        np.testing.assert_allclose(probs, want_probs, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(pol.predict(obs), want_act)  # the tracker's path
    # batch 1 (the tracker's single object) and other dtypes/shapes of the same vectors
    for x in recorded[:64]:
        assert pol.predict(x[None])[0] == ppo.predict(x[None], deterministic=True)[0][0]
    np.testing.assert_array_equal(pol.predict(recorded[:33].astype(np.float64)),
                                  sb3_reference(ppo, recorded[:33])[0])
    np.testing.assert_array_equal(pol.predict(recorded[:7, ::1].T.copy().T), pol.predict(recorded[:7]))
    assert pol.predict(recorded[0]).shape == (1,)
    with pytest.raises(ValueError, match="features"):
        pol.predict(recorded[:, :-1])


def test_the_agent_is_not_trivial(trained, observations):
    """Guards the parity test: the agent's actions vary with the observation."""
    _, onnx_path, _, _, _ = trained
    act, probs = OnnxPolicy(onnx_path, providers=CPU).act(np.concatenate(observations))
    assert len(np.unique(act)) >= 3
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_overwrite_is_refused_unless_asked(trained, tmp_path):
    agent_zip, onnx_path, _, _, _ = trained
    before = onnx_path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_agent(agent_zip, onnx_path)
    assert onnx_path.read_bytes() == before
    out = tmp_path / "again.onnx"
    out.write_bytes(b"old")
    export_agent(agent_zip, out, overwrite=True)
    assert read_metadata(out)["capacity"] == "7"
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(AgentFileError, match="opset"):
        export_agent(agent_zip, tmp_path / "old_opset.onnx", opset=13)
    assert not (tmp_path / "old_opset.onnx").exists()


def test_export_refuses_non_agents(tmp_path):
    with pytest.raises(FileNotFoundError):
        export_agent(tmp_path / "nope.zip", tmp_path / "x.onnx")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"garbage")
    with pytest.raises(AgentFileError, match="not a readable agent"):
        export_agent(bad, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# ---- refusing files ------------------------------------------------------------------------


def test_missing_corrupt_and_foreign_files(trained, tmp_path):
    _, onnx_path, _, _, _ = trained
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxPolicy(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="not found"):
        make_policy(str(tmp_path / "missing.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot an onnx model at all" * 10)
    with pytest.raises(AgentFileError, match="not a readable ONNX model"):
        OnnxPolicy(garbage)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    with pytest.raises(AgentFileError, match="not a readable ONNX model|not a sam2rl-fast agent"):
        OnnxPolicy(truncated)
    # a valid ONNX model that is not an agent
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["obs"], ["action"])], "g",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 64])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(foreign_model(graph), str(foreign))
    with pytest.raises(AgentFileError, match="not a sam2rl-fast agent"):
        OnnxPolicy(foreign)
    with pytest.raises(AgentFileError, match="not a sam2rl-fast agent"):
        make_policy(foreign)


def foreign_model(graph):
    """A valid ONNX model onnxruntime loads (IR 10, opset 17), without our metadata."""
    from onnx import helper

    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def edited(onnx_path, tmp_path, name, **changes) -> Path:
    proto = onnx.load(str(onnx_path))
    for p in proto.metadata_props:
        if p.key in changes:
            p.value = changes[p.key]
    out = tmp_path / name
    onnx.save(proto, str(out))
    return out


def test_edited_metadata_is_refused(trained, tmp_path, model):
    _, onnx_path, _, _, _ = trained
    with pytest.raises(ObservationLayoutError, match="memory-obs/v0"):
        OnnxPolicy(edited(onnx_path, tmp_path, "v0.onnx", layout="sam2rl-fast/memory-obs/v0"))
    # metadata that contradicts the graph
    with pytest.raises(AgentFileError, match="metadata says"):
        OnnxPolicy(edited(onnx_path, tmp_path, "c8.onnx", capacity="8", obs_size=str(obs_size(8)),
                          num_actions="9"))
    with pytest.raises(AgentFileError, match="unreadable"):
        OnnxPolicy(edited(onnx_path, tmp_path, "nan.onnx", capacity="seven"))
    # trained on another kind of SAM 2 model: the tracker refuses it
    sig = json.loads(read_metadata(onnx_path)["model"])
    other = edited(onnx_path, tmp_path, "other_model.onnx",
                   model=json.dumps({**sig, "hidden_dim": sig["hidden_dim"] * 2}))
    video = generate_video("occlusion", 1_000_000, num_frames=2, height=64, width=64)
    with pytest.raises(ObservationLayoutError, match="different SAM 2 model.*hidden_dim"):
        FastTracker(video.frames, agent=other, model=model, prompt={0: video.masks[0, 0]})


def test_wrong_bank_size_is_refused(trained, model):
    _, onnx_path, _, _, _ = trained
    video = generate_video("occlusion", 1_000_000, num_frames=3, height=64, width=64)
    tracker = FastTracker(video.frames, agent=str(onnx_path), model=model, capacity=8,
                          prompt={0: video.masks[0, 0]})
    with pytest.raises(ObservationLayoutError, match="7 slots.*has 8"):
        tracker.run()
    pol = OnnxPolicy(onnx_path, providers=CPU)
    with pytest.raises(ObservationLayoutError):
        pol.reset(1, 6, None)


# ---- in the tracker --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["trained", "decisive", "fifo"])
def test_tracker_with_onnx_agent_equals_sb3_agent(which, request, model, video):
    agent_zip, onnx_path = request.getfixturevalue(which)[:2]
    prompt = {0: video.masks[0, 0]}
    runs = {}
    for agent in (agent_zip, onnx_path):
        tracker = FastTracker(video.frames, agent=agent, model=model, prompt=prompt)
        runs[agent.suffix] = (tracker.policy, tracker.run())
    (sb3_pol, sb3), (onnx_pol, ours) = runs[".zip"], runs[".onnx"]
    assert isinstance(sb3_pol, Sb3Policy) and isinstance(onnx_pol, OnnxPolicy)
    T = VIDEO["num_frames"]
    assert ours.masks.shape == sb3.masks.shape == (T, 1, VIDEO["height"], VIDEO["width"])
    for f in range(T):
        np.testing.assert_array_equal(ours.decisions[f], sb3.decisions[f], err_msg=f"frame {f}")
        np.testing.assert_array_equal(ours.masks[f], sb3.masks[f], err_msg=f"frame {f}")
    np.testing.assert_array_equal(ours.ious, sb3.ious)
    np.testing.assert_array_equal(ours.scores, sb3.scores)
    assert ours.masks[1:].any()  # it tracked something
    if which == "decisive":  # memories stored in several slots: the decisions mattered
        assert len(set(ours.decisions[1:, 0].tolist())) >= 3


def test_fifo_prior_starts_the_agent_at_the_stock_rule(fifo, model, video):
    """An agent trained a little from the stock rule's prior still acts as SAM 2's rule: every
    memory stored, over the oldest once the bank is full; so it tracks as agent="sam2" does."""
    from sam2rl_fast.policies.policy_net import fifo_action_mask

    prompt = {0: video.masks[0, 0]}
    ours = FastTracker(video.frames, agent=fifo[0], model=model, prompt=prompt).run()
    stock = FastTracker(video.frames, agent="sam2", model=model, prompt=prompt).run()
    T = VIDEO["num_frames"]
    slots = ours.decisions[1:, 0].tolist()
    assert -1 not in slots and sorted(slots[:6]) == [1, 2, 3, 4, 5, 6]  # fills the 6 free slots
    assert slots[6:] == slots[: T - 7]  # then overwrites the oldest: the same order again
    for f in range(T):
        np.testing.assert_array_equal(ours.masks[f], stock.masks[f], err_msg=f"frame {f}")
    # the prior alone: empty slots first (all alike), else the oldest non-conditioning memory
    S = 3
    slots = torch.zeros(3, S, 8)
    slots[0, 0, :3] = torch.tensor([1.0, 1.0, 0.05])  # conditioning memory, the oldest
    slots[0, 1, :3] = torch.tensor([1.0, 0.0, 0.02])
    slots[1] = slots[0]
    slots[1, 2, :3] = torch.tensor([1.0, 0.0, 0.03])
    slots[2, :, :2] = 1.0  # every slot conditioning: nothing qualifies but them, all alike
    np.testing.assert_array_equal(fifo_action_mask(slots).numpy(),
                                  [[0, 0, 1], [0, 0, 1], [1, 1, 1]])
    slots[1, 2, 2] = 0.01
    assert fifo_action_mask(slots)[1].tolist() == [0, 1, 0]


# ---- CLI and scripts ------------------------------------------------------------------------


def test_cli_exports_and_refuses_overwrite(trained, tmp_path, capsys):
    agent_zip = trained[0]
    out = tmp_path / "cli.onnx"
    args = add_export_args(argparse.ArgumentParser()).parse_args([str(agent_zip), "-o", str(out)])
    assert export_cli(args) == 0
    assert "wrote" in capsys.readouterr().out and read_metadata(out)["format"] == FORMAT
    before = out.read_bytes()
    assert export_cli(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    args = add_export_args(argparse.ArgumentParser()).parse_args(
        [str(agent_zip), "-o", str(out), "--overwrite", "--opset", "18"])
    assert export_cli(args) == 0 and read_metadata(out)["opset"] == "18"
    assert OnnxPolicy(out, providers=CPU).predict(np.zeros((1, obs_size(7)), np.float32)).shape == (1,)
    missing = add_export_args(argparse.ArgumentParser()).parse_args(
        [str(tmp_path / "none.zip"), "-o", str(tmp_path / "x.onnx")])
    assert export_cli(missing) == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # -o is required
        add_export_args(argparse.ArgumentParser()).parse_args([str(agent_zip)])


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "export" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_script(trained, tmp_path, capsys):
    out = tmp_path / "script.onnx"
    assert _script("export_agent").main([str(trained[0]), "-o", str(out)]) == 0
    assert read_metadata(out)["capacity"] == "7"


def test_standalone_runner_needs_no_torch(trained, observations, tmp_path):
    _, onnx_path, ppo, _, _ = trained
    obs = observations[0][:200]
    np.save(tmp_path / "obs.npy", obs)
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    script = ROOT / "export" / "run_onnx_policy.py"
    # torch made unimportable: the script must not need it
    env_code = "import sys; sys.modules['torch'] = None; sys.modules['sam2rl_fast'] = None; " + code
    res = subprocess.run([sys.executable, "-c", env_code, str(script), str(onnx_path),
                          "--obs", str(tmp_path / "obs.npy"), "--save", str(tmp_path / "out.npz")],
                         check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "CPUExecutionProvider" in res.stdout or "CUDAExecutionProvider" in res.stdout
    got = np.load(tmp_path / "out.npz")
    want_act, want_probs = sb3_reference(ppo, obs)
    np.testing.assert_array_equal(got["action"], want_act)
    np.testing.assert_allclose(got["probs"], want_probs, atol=1e-5, rtol=0)
    # it refuses a file without our metadata
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["obs"], ["y"])], "g",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(foreign_model(graph), str(tmp_path / "foreign.onnx"))
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "foreign.onnx")],
                         check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "not a sam2rl-fast agent" in res.stderr


@pytest.fixture
def bundled_here(trained, tmp_path, monkeypatch):
    """The module's agent installed as the bundled one (sam2rl.onnx + sam2rl.zip)."""
    import shutil

    from sam2rl_fast.policies import bundled

    agent_zip, onnx_path = trained[:2]
    onnx_dst, zip_dst = tmp_path / "sam2rl.onnx", tmp_path / "sam2rl.zip"
    shutil.copy(onnx_path, onnx_dst)
    shutil.copy(agent_zip, zip_dst)
    monkeypatch.setattr(bundled, "AGENT_ONNX", onnx_dst)
    monkeypatch.setattr(bundled, "AGENT_ZIP", zip_dst)
    return bundled


def test_bundled_agent_loads_onnx_first_then_the_zip(bundled_here, monkeypatch, model, observations):
    pol = make_policy("sam2rl")
    assert isinstance(pol, OnnxPolicy) and pol.name == "sam2rl"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    zpol = make_policy("SAM2RL")
    assert isinstance(zpol, Sb3Policy) and zpol.name == "sam2rl"
    np.testing.assert_array_equal(zpol.predict(observations[0]), pol.predict(observations[0]))
    # the defaults of eval / demo include it for the model it was trained for, not for another
    assert bundled_here.default_agents(model) == ["sam2", "samurai", "dam4sam", "sam2long", "sam2rl"]
    other = build_model("sam2.1_hiera_t", device="cpu", image_size=128)
    assert bundled_here.default_agents(other) == ["sam2", "samurai", "dam4sam", "sam2long"]


def test_no_bundled_agent_is_a_clear_error(tmp_path, monkeypatch, model):
    from sam2rl_fast.policies import bundled

    monkeypatch.setattr(bundled, "AGENT_ONNX", tmp_path / "none.onnx")
    monkeypatch.setattr(bundled, "AGENT_ZIP", tmp_path / "none.zip")
    with pytest.raises(FileNotFoundError, match="ships no bundled agent"):
        make_policy("sam2rl")
    assert bundled.default_agents(model) == ["sam2", "samurai", "dam4sam", "sam2long"]
