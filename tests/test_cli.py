"""`sam2rl-fast track`: outputs, refusal to overwrite, clear errors."""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from sam2rl_fast.cli import main
from tests.helpers import moving_square_video, write_jpeg_folder


@pytest.fixture
def video(tmp_path):
    frames, masks = moving_square_video(5, n_obj=2, seed=4)
    folder = write_jpeg_folder(frames, tmp_path / "video")
    mask_png = tmp_path / "prompt.png"
    Image.fromarray((masks[0, 0] * 1 + masks[0, 1] * 2).astype(np.uint8)).save(mask_png)
    return folder, mask_png, masks


def test_track_writes_masks_scores_summary_overlay(tmp_path, video, capsys):
    folder, mask_png, masks = video
    out = tmp_path / "out"
    args = [folder, "--mask", str(mask_png), "--model", "sam2.1_hiera_t", "--image-size", "256",
            "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(["track", *args]) == 0
    pngs = sorted((out / "masks").iterdir())
    assert len(pngs) == 5
    first = np.array(Image.open(pngs[0]))
    assert first.shape == (96, 128) and set(np.unique(first)) <= {0, 1, 2}
    # The prompted frame reproduces the prompt (mask input is used as output).
    assert (first == 1).sum() > 0.9 * masks[0, 0].sum()
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and {r["obj_id"] for r in rows} == {"0", "1"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["fps"] > 0 and summary["agent"] == "sam2"
    assert (out / "overlay.mp4").stat().st_size > 0
    # An existing output folder is never replaced without --overwrite.
    assert main(["track", *args]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert len(list((out / "masks").iterdir())) == 5
    assert main(["track", *args, "--overwrite", "--agent", "samurai"]) == 0
    assert json.loads((out / "summary.json").read_text())["agent"] == "samurai"


def test_track_bad_input_is_one_clear_line(tmp_path, video, capsys):
    folder, _, _ = video
    base = ["--model", "sam2.1_hiera_t", "--image-size", "256", "--device", "cpu", "--quiet"]
    assert main(["track", folder, "--box", "0,0,999,10", *base, "--out", str(tmp_path / "a")]) == 2
    assert "inside the 128x96 frame" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing written for a bad prompt
    assert main(["track", str(tmp_path / "nope"), "--box", "0,0,9,9", *base, "--out",
                 str(tmp_path / "b")]) == 2
    assert "video not found" in capsys.readouterr().err
    assert main(["track", folder, "--box", "1,2,3", *base, "--out", str(tmp_path / "c")]) == 2
    assert "needs 4 numbers" in capsys.readouterr().err
    assert main(["track", folder, "--box", "0,0,9,9", "--model", str(tmp_path / "x.pt"), "--device",
                 "cpu", "--quiet", "--out", str(tmp_path / "d")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


# ------------------------------------------------------------------ user errors: one line, exit 2, before any work
BASE = ["--model", "sam2.1_hiera_t", "--image-size", "256", "--device", "cpu", "--quiet"]


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _earlier_run(out):
    """A folder as an earlier `train` left it (its files in the manifest)."""
    from sam2rl_fast.outputs import staged_output

    with staged_output(out, False, command="train") as stage:
        (stage / "checkpoints" / "agent").mkdir(parents=True)
        (stage / "agent.zip").write_bytes(b"agent")
        (stage / "checkpoints" / "agent" / "step00000080.zip").write_bytes(b"ckpt")
        (stage / "eval").mkdir()
        (stage / "eval" / "table.md").write_text("| table |")
    (out / "notes.txt").write_text("mine")
    return _snapshot(out)


@pytest.mark.parametrize("toml, flags, msg", [
    ('suites = ["no-such-suite"]\n', [], "suites.*unknown: \\['no-such-suite'\\]"),
    ('total_steps = "160"\n', [], "total_steps \\(--total-steps\\) must be a positive integer"),
    ('num_envs = 4.5\n', [], "num_envs \\(--num-envs\\) must be a positive integer"),
    ('', ["--num-envs", "0"], "num_envs \\(--num-envs\\) must be a positive integer, got 0"),
    ('', ["--total-steps", "-5"], "total_steps .* got -5"),
    ('', ["--total-steps", "0"], "total_steps .* got 0"),
    ('gamma = 1.5\n', [], "gamma must be a number in"),
])
def test_train_checks_its_config_before_touching_out(tmp_path, capsys, monkeypatch, toml, flags, msg):
    import sam2rl_fast.rl.training as training

    monkeypatch.setattr(training, "run_training", lambda *a, **k: pytest.fail("training started"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('mode = "per-video"\n' + toml)
    new = tmp_path / "new"
    assert main(["train", "--config", str(cfg), *flags, "--out", str(new), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(msg, err) and err.count("\n") == 1, err
    assert not new.exists()
    old = tmp_path / "old"
    before = _earlier_run(old)
    assert main(["train", "--config", str(cfg), *flags, "--out", str(old), "--overwrite", "--quiet"]) == 2
    assert _snapshot(old) == before
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_a_failed_train_overwrite_keeps_the_earlier_run(tmp_path, capsys, monkeypatch):
    import sam2rl_fast.rl.training as training

    def fails_late(cfg, out, **k):
        (out / "checkpoints" / "agent").mkdir(parents=True)
        (out / "checkpoints" / "agent" / "step00000040.zip").write_bytes(b"new ckpt")
        raise ValueError("a video could not be read")

    monkeypatch.setattr(training, "run_training", fails_late)
    old = tmp_path / "old"
    before = _earlier_run(old)
    args = ["train", "--suite", "easy", "--out", str(old), "--overwrite", "--quiet"]
    assert main(args) == 2
    assert _snapshot(old) == before
    monkeypatch.setattr(training, "run_training", lambda cfg, out, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(args) == 130
    assert "left as it was" in capsys.readouterr().err and _snapshot(old) == before

    def trains(cfg, out, **k):
        (out / "agent.zip").write_bytes(b"new agent")
        return [out / "agent.zip"]

    monkeypatch.setattr(training, "run_training", trains)
    assert main(args) == 0
    after = _snapshot(old)
    assert after["agent.zip"] == b"new agent" and after["notes.txt"] == b"mine"
    assert "eval/table.md" not in after and "checkpoints/agent/step00000080.zip" not in after


def test_a_new_train_that_fails_before_a_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    import sam2rl_fast.rl.training as training

    def fails(cfg, out, **k):
        (out / "config.json").write_text("{}")
        raise ValueError("model checkpoint not found")

    monkeypatch.setattr(training, "run_training", fails)
    assert main(["train", "--suite", "easy", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_interrupted_new_train_keeps_its_checkpoints_for_resume(tmp_path, capsys, monkeypatch):
    import sam2rl_fast.rl.training as training

    def interrupted(cfg, out, **k):
        (out / "checkpoints" / "agent").mkdir(parents=True)
        (out / "checkpoints" / "agent" / "step00000040.zip").write_bytes(b"ckpt")
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_training", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--suite", "easy", "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "step00000040.zip" in err and "--resume" in err
    assert (out / "checkpoints" / "agent" / "step00000040.zip").read_bytes() == b"ckpt"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_one_agent_twice_or_two_files_of_one_name_are_refused(tmp_path, capsys):
    for agents in (["sam2", "sam2"], [str(tmp_path / "a" / "x.zip"), str(tmp_path / "b" / "x.zip")]):
        argv = [f for a in agents for f in ("--agent", a)]
        for cmd in (["eval", "--videos", "1", "--frames", "2"], ["demo", "--frames", "2"]):
            assert main([*cmd, *argv, *BASE, "--out", str(tmp_path / "o")]) == 2
            assert "share the name" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, msg", [
    (["eval", "--videos", "0"], "--videos must be at least 1, got 0"),
    (["eval", "--frames", "0"], "--frames must be at least 1"),
    (["track", "V", "--box", "1,1,9,9", "--fps", "inf"], "--fps must be > 0 and finite"),
    (["track", "V", "--box", "1,2,3"], "needs 4 numbers"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, video, capsys, argv, msg):
    folder, _, _ = video
    argv = [folder if a == "V" else a for a in argv]
    assert main([*argv, *BASE, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("error, code, msg", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (PermissionError(13, "Permission denied", "/data/out/masks/00001.png"), 2,
     "/data/out/masks/00001.png: Permission denied"),
])
def test_ctrl_c_and_os_errors_are_one_line(tmp_path, video, capsys, monkeypatch, error, code, msg):
    import sam2rl_fast.cli as cli

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(cli, "_write_tracking", fail)
    folder, mask_png, _ = video
    out = tmp_path / "out"
    assert main(["track", folder, "--mask", str(mask_png), *BASE, "--out", str(out)]) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert msg in err and "Traceback" not in err and len(lines) == 1, err
    assert not out.exists()


def test_a_colour_mask_is_one_object_per_colour(tmp_path, video):
    from sam2rl_fast.data.label_png import DatasetError, read_label_png

    folder, _, masks = video
    rgb = np.zeros((*masks.shape[2:], 3), np.uint8)
    rgb[masks[0, 0]] = (0, 128, 0)   # DAVIS colour 2
    rgb[masks[0, 1]] = (128, 0, 0)   # DAVIS colour 1
    png = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(png)
    labels = read_label_png(png, colours=True)  # the --mask reader
    assert np.array_equal(labels == 1, masks[0, 1]) and np.array_equal(labels == 2, masks[0, 0])
    with pytest.raises(DatasetError, match="a RGB image, not a palette"):  # a dataset's reader
        read_label_png(png)
    out = tmp_path / "o"
    assert main(["track", folder, "--mask", str(png), *BASE, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["objects"] == ["0", "1"]
