"""PPO training: a few hundred steps run, agent files round-trip and refuse the wrong tracker."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from sam2rl_fast import FastTracker
from sam2rl_fast.cli import main
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.policies import ObservationLayoutError, make_policy
from sam2rl_fast.rl.agents import AgentFileError, Sb3Policy, load_sb3, read_metadata
from sam2rl_fast.rl.training import TrainConfig
from tests.helpers import build_random_predictor

SMOKE = Path(__file__).resolve().parents[1] / "train" / "configs" / "smoke.toml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", "--config", str(SMOKE), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def video():
    return generate_video("occlusion", 1_000_000, num_frames=8, height=128, width=128)


def test_training_writes_agent_checkpoints_logs_and_curve(run):
    cfg = TrainConfig.from_toml(SMOKE)
    agent = run / "occlusion-1000000.zip"
    assert agent.is_file() and (run / "training-curve.png").stat().st_size > 0
    assert list((run / "checkpoints" / "occlusion-1000000").glob("step*.zip"))
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    rows = (run / "occlusion-1000000-episodes.csv").read_text().splitlines()
    assert len(rows) - 1 == cfg.total_steps // (cfg.num_envs * (cfg.num_frames - 2)) * cfg.num_envs
    meta = read_metadata(agent)
    assert meta["layout"] == "sam2rl-fast/memory-obs/v1" and meta["capacity"] == 7
    assert meta["model"]["image_size"] == 256 and meta["training"]["timesteps"] >= cfg.total_steps
    assert meta["training"]["videos"] == ["occlusion-1000000"]
    # evaluated against the stock rule and the heuristics on its own video
    table = (run / "eval" / "table.md").read_text()
    assert table.splitlines()[2].startswith("| occlusion | 1 |")
    rows = json.loads((run / "eval" / "scores.json").read_text())
    assert [r["video"] for r in rows] == ["occlusion-1000000"] and (run / "eval" / "gains.png").is_file()


def test_agent_file_round_trip_and_tracker(run, video):
    path = run / "occlusion-1000000.zip"
    ppo, _ = load_sb3(path)
    pol = Sb3Policy(path)
    obs = np.random.default_rng(0).uniform(-1, 1.5, (256, 64)).astype(np.float32)
    np.testing.assert_array_equal(pol.predict(obs), ppo.predict(obs, deterministic=True)[0])
    assert isinstance(make_policy(str(path)), Sb3Policy)
    res = FastTracker(video.frames, agent=str(path), prompt={0: video.masks[0, 0]}).run()
    assert res.decisions.shape == (8, 1) and ((res.decisions[1:] >= -1) & (res.decisions[1:] < 7)).all()


def test_agent_for_another_layout_or_model_is_rejected(run, video, tmp_path):
    path = run / "occlusion-1000000.zip"
    with pytest.raises(ObservationLayoutError, match="bank of 7 slots"):
        FastTracker(video.frames, agent=str(path), prompt={0: video.masks[0, 0]}, capacity=8).run()
    other = build_random_predictor("sam2.1", 128)
    with pytest.raises(ObservationLayoutError, match="different SAM 2 model"):
        FastTracker(video.frames, agent=str(path), model=other, prompt={0: video.masks[0, 0]})
    # An edited layout version in the metadata.
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "sam2rl_fast.json":
                meta = json.loads(data)
                meta["layout"] = "sam2rl-fast/memory-obs/v0"
                data = json.dumps(meta)
            zout.writestr(item, data)
    with pytest.raises(ObservationLayoutError, match="memory-obs/v0"):
        make_policy(str(bad))


def test_bad_agent_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        make_policy(str(tmp_path / "missing.zip"))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(AgentFileError, match="not a readable agent"):
        make_policy(str(junk))
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("data", "{}")
    with pytest.raises(AgentFileError, match="not a sam2rl-fast agent"):
        make_policy(str(plain))


def test_train_refuses_to_overwrite_and_resumes(run, capsys):
    before = (run / "occlusion-1000000.zip").stat().st_mtime
    assert main(["train", "--config", str(SMOKE), "--out", str(run), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "occlusion-1000000.zip").stat().st_mtime == before  # nothing touched
    assert main(["train", "--config", str(SMOKE), "--out", str(run), "--resume", "--quiet"]) == 0
    assert "exists: done" in capsys.readouterr().out


def test_config_errors(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('mode = "per-video"\nlearning_rat = 1e-3\n')
    with pytest.raises(ValueError, match="unknown settings"):
        TrainConfig.from_toml(bad)
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="per-episode")
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_toml(tmp_path / "none.toml")


def test_headroom_is_checked_before_training(video):
    from sam2rl_fast.model.loading import build_model
    from sam2rl_fast.rl.features import FeatureCache
    from sam2rl_fast.rl.training import check_headroom

    model = build_model(None, device="cpu")
    msgs = []
    rows = check_headroom([(video.frames, video.masks, "v")], model, FeatureCache(model, progress=False),
                          samples=2, log=msgs.append)
    assert len(rows) == 1 and msgs[0].startswith("headroom: over 1 video(s)")
    assert ("WARNING" in " ".join(msgs)) == (rows[0].random_best < 1e-3)


def test_resume_after_a_kill_in_a_copied_folder(run, tmp_path, capsys):
    """As after SIGKILL past a checkpoint, in a copy of the run folder: the episodes CSV
    lost its rows (never flushed before), the final agent is missing. The resume repairs
    the CSV, counts checkpoints from where it is, and logs into the copy only."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "occlusion-1000000.zip").unlink()
    shutil.rmtree(copy / "eval")
    (copy / "occlusion-1000000-episodes.csv").write_text("")
    for p in (copy / "checkpoints" / "occlusion-1000000").glob("step*.zip"):
        if p.name != "step00000080.zip":
            p.unlink()
    tb_orig = sorted(p.name for p in (run / "tensorboard").rglob("events.out.tfevents.*"))
    assert main(["train", "--config", str(SMOKE), "--out", str(copy), "--resume", "--quiet"]) == 0
    rows = (copy / "occlusion-1000000-episodes.csv").read_text().splitlines()
    assert rows[0].startswith("timesteps,") and len(rows) > 1
    assert int(rows[1].split(",")[0]) > 80  # only the replayed part: earlier rows were lost
    assert (copy / "training-curve.png").is_file() and (copy / "eval" / "table.md").is_file()
    ckpts = sorted(p.name for p in (copy / "checkpoints" / "occlusion-1000000").glob("step*.zip"))
    # every 80 steps counted from the start (not again from the resume), each after an update;
    # the last state (160) is the agent file itself
    assert ckpts == ["step00000080.zip"]
    assert sorted(p.name for p in (run / "tensorboard").rglob("events.out.tfevents.*")) == tb_orig
    assert len(list((copy / "tensorboard").rglob("events.out.tfevents.*"))) > len(tb_orig)


def test_resume_with_other_settings_is_refused_before_anything_changes(run, tmp_path, capsys):
    cfg_before = (run / "config.json").read_text()
    other = tmp_path / "other.toml"
    other.write_text(SMOKE.read_text().replace("n_epochs = 2", "n_epochs = 3"))
    assert main(["train", "--config", str(other), "--out", str(run), "--resume", "--quiet"]) == 2
    assert "n_epochs: run has 2, given 3" in capsys.readouterr().err
    assert (run / "config.json").read_text() == cfg_before


def _tb_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for f in sorted(Path(folder).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("time/"):  # wall-clock rates differ by nature
                continue
            for ev in acc.Scalars(tag):
                out[(tag, ev.step)] = ev.value  # a replayed step overwrites the killed run's
    return out


def _csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(fh)]


def _train_cmd(out):
    import sys

    return [sys.executable, "-m", "sam2rl_fast.cli", "train", "--config", str(SMOKE), "--out",
            str(out), "--quiet"]


# one thread: the same arithmetic (reduction order) in the reference and the killed runs
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    import os
    import subprocess

    out = tmp_path_factory.mktemp("straight") / "run"
    r = subprocess.run(_train_cmd(out), env={**os.environ, **ONE_THREAD}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("kill_after_s", [0.0, 1.5])
def test_sigkill_at_a_random_point_then_resume_equals_the_uninterrupted_run(straight_run, tmp_path,
                                                                           kill_after_s):
    """A real SIGKILL (no handler runs) at some point after the first checkpoint; --resume
    must then end with the uninterrupted run's agent, episodes CSV, curve data and
    TensorBoard scalars (same seed)."""
    import os
    import signal
    import subprocess
    import time

    import torch

    run = straight_run
    out = tmp_path / "killed"
    cmd = _train_cmd(out)
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoints" / "occlusion-1000000" / "step00000080.state.pt"
    t0 = time.time()
    while not state.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert state.exists(), "no run state was written with the first checkpoint: no exact resume"
    time.sleep(kill_after_s)
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not finished_first:
        assert not (out / "occlusion-1000000.zip").exists()
    r = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    a, _ = load_sb3(run / "occlusion-1000000.zip")
    b, _ = load_sb3(out / "occlusion-1000000.zip")
    assert a.num_timesteps == b.num_timesteps
    for (ka, va), (kb, vb) in zip(a.policy.state_dict().items(), b.policy.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert _csv_rows(out / "occlusion-1000000-episodes.csv") == _csv_rows(run / "occlusion-1000000-episodes.csv")
    assert (out / "training-curve.png").stat().st_size > 0
    sa, sb = _tb_scalars(run / "tensorboard"), _tb_scalars(out / "tensorboard")
    assert sa.keys() == sb.keys() and sa, sorted(set(sa) ^ set(sb))[:5]
    for k in sa:
        assert sa[k] == pytest.approx(sb[k], rel=1e-6, abs=1e-9), k


def test_ctrl_c_names_the_last_checkpoint_and_how_to_resume(run, tmp_path, monkeypatch, capsys):
    import shutil

    import sam2rl_fast.rl.training as training

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_training", interrupted)
    assert main(["train", "--config", str(SMOKE), "--out", str(copy), "--resume", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: the last checkpoint is" in err and "step00000080.zip" in err
    assert "--resume" in err and "Traceback" not in err
