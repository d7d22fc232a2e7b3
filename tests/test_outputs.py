"""Output folders never lose what a user put there (sam2rl_fast.outputs and every command)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from sam2rl_fast.cli import main
from sam2rl_fast.outputs import MANIFEST, OutputDirError, check_out_path, staged_output
from tests.helpers import moving_square_video, write_jpeg_folder

MODEL = ["--model", "sam2.1_hiera_t", "--image-size", "256", "--device", "cpu", "--quiet"]


@pytest.fixture
def clip(tmp_path):
    frames, masks = moving_square_video(4, n_obj=1, seed=2)
    folder = write_jpeg_folder(frames, tmp_path / "frames")
    mask_png = tmp_path / "prompt.png"
    Image.fromarray(masks[0, 0].astype(np.uint8)).save(mask_png)
    return folder, mask_png


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_out_inside_the_working_folder_of_the_input_is_refused(tmp_path, clip, monkeypatch, capsys):
    """`--out . --overwrite` in the folder holding the input used to delete it and all else."""
    folder, mask_png = clip
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", out,
                     "--overwrite"]) == 2
        assert "working folder" in capsys.readouterr().err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("which", ["frames", "parent", "mask"])
def test_out_that_is_or_holds_an_input_is_refused(tmp_path, clip, capsys, which):
    folder, mask_png = clip
    out = {"frames": folder, "parent": tmp_path, "mask": mask_png}[which]
    before = _tree(tmp_path)
    assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out),
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert ("input" in err or "is a file" in err or "working folder" in err), err
    assert _tree(tmp_path) == before


def test_overwrite_removes_only_what_the_tool_wrote(tmp_path, clip):
    folder, mask_png = clip
    out = tmp_path / "out"
    args = ["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out)]
    assert main(args) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert "scores.csv" in manifest["files"] and "masks/00003.png" in manifest["files"]
    (out / "notes.txt").write_text("mine")
    (out / "masks" / "my_edit.png").write_bytes(b"edited by hand")
    (out / "masks" / "00099.png").write_bytes(b"old")  # as if from an earlier, longer run...
    m = json.loads((out / MANIFEST).read_text())
    m["files"].append("masks/00099.png")  # ...that the tool wrote
    (out / MANIFEST).write_text(json.dumps(m))
    assert main([*args, "--overwrite", "--agent", "samurai"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "masks" / "my_edit.png").read_bytes() == b"edited by hand"
    assert not (out / "masks" / "00099.png").exists()
    assert json.loads((out / "summary.json").read_text())["agent"] == "samurai"


def test_a_user_file_named_like_an_output_is_never_replaced(tmp_path, clip, capsys):
    folder, mask_png = clip
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.csv").write_text("my spreadsheet")
    assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out),
                 "--overwrite"]) == 2
    assert "not written by sam2rl-fast" in capsys.readouterr().err
    assert (out / "scores.csv").read_text() == "my spreadsheet"


def test_a_failure_midway_leaves_no_half_written_folder(tmp_path, clip, monkeypatch, capsys):
    folder, mask_png = clip
    import sam2rl_fast.cli as cli

    def boom(*a, **k):
        raise ValueError("frame 2 could not be decoded")

    monkeypatch.setattr(cli, "_write_tracking", boom)
    out = tmp_path / "out"
    assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out)]) == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out),
                 "--overwrite"]) == 2
    assert _tree(out) == {"keep.txt": b"x"}


def test_eval_demo_and_train_refuse_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.bin").write_bytes(b"1")
    for cmd in (["eval", "--videos", "1", "--frames", "2", *MODEL], ["demo", "--frames", "2", *MODEL],
                ["train", "--model", "sam2.1_hiera_t", "--quiet"]):
        assert main([*cmd, "--out", ".", "--overwrite"]) == 2, cmd
        assert "working folder" in capsys.readouterr().err
    assert _tree(tmp_path) == {"data.bin": b"1"}


def test_staged_output_helpers(tmp_path):
    with pytest.raises(OutputDirError, match="filesystem root"):
        check_out_path("/")
    with pytest.raises(OutputDirError, match="home folder|working folder"):
        check_out_path(os.path.expanduser("~"))
    out = tmp_path / "o"
    with staged_output(out, False) as stage:
        (stage / "a" / "b").mkdir(parents=True)
        (stage / "a" / "b" / "c.txt").write_text("1")
        assert not out.exists()
    assert (out / "a" / "b" / "c.txt").read_text() == "1"
    with pytest.raises(OutputDirError, match="not empty"):
        with staged_output(out, False):
            pass
    with pytest.raises(RuntimeError):
        with staged_output(out, True) as stage:
            (stage / "x.txt").write_text("2")
            raise RuntimeError("interrupted")
    assert (out / "a" / "b" / "c.txt").read_text() == "1" and not (out / "x.txt").exists()


def test_exports_never_write_over_their_input(tmp_path, capsys):
    import torch

    from tests.helpers import build_random_predictor

    ckpt = tmp_path / "model.onnx"  # a checkpoint whose name looks like the output's
    torch.save({"model": build_random_predictor("sam2.1", 256).state_dict()}, ckpt)
    before = ckpt.read_bytes()
    assert main(["export-memory-attention", "--model", str(ckpt), "-o", str(ckpt),
                 "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    agent = tmp_path / "agent.onnx"
    agent.write_bytes(b"agent")
    assert main(["export", str(agent), "-o", str(agent), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before and agent.read_bytes() == b"agent"
