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


# ------------------------------------------------------------------ links, late clashes, leftovers
def _snapshot(folder):
    """Everything under `folder`, links as links (never followed): {path: kind and content}."""
    snap = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                snap[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                snap[rel] = ("dir",)
            else:
                with open(p, "rb") as fh:
                    snap[rel] = ("file", fh.read())
    return snap


def test_overwrite_never_deletes_through_a_linked_folder(tmp_path, clip):
    """An earlier output whose masks/ became a link to the user's folder: --overwrite must
    neither delete nor write there."""
    folder, mask_png = clip
    out = tmp_path / "out"
    args = ["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out)]
    assert main(args) == 0
    mine = tmp_path / "my_masks"
    (out / "masks").rename(mine)  # the user moved the masks away and linked them back
    (out / "masks").symlink_to(mine, target_is_directory=True)
    before, before_out = _snapshot(mine), _snapshot(out)
    assert main([*args, "--overwrite"]) == 2
    assert _snapshot(mine) == before and _snapshot(out) == before_out
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_refused_overwrite_keeps_the_earlier_results(tmp_path, capsys):
    """A user file with an output's name blocks the new results: the earlier results stay."""
    frames, masks = moving_square_video(12, n_obj=1, seed=2)
    long_clip = write_jpeg_folder(frames, tmp_path / "long")
    short_clip = write_jpeg_folder(frames[:4], tmp_path / "short")
    mask_png = tmp_path / "prompt.png"
    Image.fromarray(masks[0, 0].astype(np.uint8)).save(mask_png)
    out = tmp_path / "out"
    assert main(["track", str(short_clip), "--mask", str(mask_png), *MODEL, "--out", str(out)]) == 0
    (out / "masks" / "00010.png").write_bytes(b"hand-made")
    before = _snapshot(out)
    assert main(["track", str(long_clip), "--mask", str(mask_png), *MODEL, "--out", str(out),
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "masks/00010.png" in err and "nothing in" in err
    assert _snapshot(out) == before


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "o"
    with staged_output(out, False) as stage:
        (stage / "a.txt").write_text("1")
    dead = 2 ** 22 + 12345  # beyond pid_max: no such process
    stale = tmp_path / f".o.partial-{dead}-x1y2"
    (stale / "masks").mkdir(parents=True)
    (stale / "masks" / "0.png").write_bytes(b"x")
    (out / f"{MANIFEST}.tmp{dead}").write_text("{}")
    (out / f".{MANIFEST}.tmp{dead}").write_text("{}")
    other = tmp_path / ".other.partial-1"  # another folder's (and a live pid): not ours to remove
    other.mkdir()
    with staged_output(out, True) as stage:
        (stage / "a.txt").write_text("2")
    assert not stale.exists() and not (out / f".{MANIFEST}.tmp{dead}").exists()
    assert other.is_dir() and (out / f"{MANIFEST}.tmp{dead}").exists()  # a user's file name
    assert (out / "a.txt").read_text() == "2"


def test_a_racing_run_is_named_as_such(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(OutputDirError, match="filled by another run"):
        with staged_output(out, False) as stage:
            (stage / "a.txt").write_text("mine")
            with staged_output(out, False) as other:  # a second run finishes first
                (other / "a.txt").write_text("theirs")
    assert (out / "a.txt").read_text() == "theirs"


@pytest.mark.parametrize("case", ["parent_is_file", "long_name", "proc", "read_only"])
def test_an_unwritable_out_is_one_line_before_any_work(tmp_path, clip, capsys, case, monkeypatch):
    folder, mask_png = clip
    (tmp_path / "file.txt").write_text("x")
    out = {"parent_is_file": tmp_path / "file.txt" / "out", "long_name": tmp_path / ("n" * 300),
           "proc": "/proc/sam2rl-out", "read_only": tmp_path / "ro" / "out"}[case]
    if case == "read_only":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
    import sam2rl_fast.cli as cli

    monkeypatch.setattr(cli, "_model_for", lambda a: pytest.fail("work started before the check"))
    assert main(["track", str(folder), "--mask", str(mask_png), *MODEL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and ".partial" not in err, err


def _fuzz_layout():
    from hypothesis import strategies as st

    names = st.sampled_from(["a.txt", "masks/0.png", "masks/1.png", "sub/deep/x.bin", "sub/y.csv"])
    ops = st.lists(st.tuples(st.sampled_from(["user_file", "link_file_out", "link_dir_out",
                                              "link_file_in", "link_dir_in", "replace_dir_by_link",
                                              "replace_file_by_link", "link_to_parent"]),
                             names, st.integers(0, 3)), max_size=6)
    return st.tuples(st.lists(names, min_size=1, max_size=5, unique=True), ops,
                     st.lists(names, min_size=1, max_size=5, unique=True))


def _apply(op, rel, k, out, outside):
    import shutil

    p = out / rel
    target_dir = outside / f"d{k}"
    target_file = outside / f"f{k}.txt"
    if op == "user_file":
        if not p.parent.is_symlink() and not p.exists() and not p.is_symlink():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"user " + rel.encode())
        return
    if op == "replace_dir_by_link":
        d = p.parent
        if d != out and d.is_dir() and not d.is_symlink():
            shutil.move(str(d), str(outside / f"moved{k}-{d.name}"))
            d.symlink_to(outside / f"moved{k}-{d.name}", target_is_directory=True)
        return
    if op == "replace_file_by_link":
        if p.is_file() and not p.is_symlink():
            p.unlink()
            p.symlink_to(target_file)
        return
    link = p.with_name(p.name + f".link{k}")
    if link.is_symlink() or link.exists():
        return
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return
    target = {"link_file_out": target_file, "link_dir_out": target_dir,
              "link_file_in": out / "a.txt", "link_dir_in": out / "masks",
              "link_to_parent": out.parent}[op]
    link.symlink_to(target, target_is_directory=op in ("link_dir_out", "link_dir_in", "link_to_parent"))


def test_fuzzed_links_never_let_overwrite_touch_the_users_files():
    """Property: whatever links (to files or folders, inside or pointing out) and user files
    an earlier output holds, `--overwrite` changes nothing outside `--out` and none of the
    user's entries inside it; a refused one changes nothing at all."""
    import tempfile
    from pathlib import Path

    from hypothesis import HealthCheck, given, settings

    from sam2rl_fast.outputs import read_manifest

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_fuzz_layout())
    def check(layout):
        first, ops, second = layout
        with tempfile.TemporaryDirectory() as td:
            root = Path(td)
            outside, out = root / "outside", root / "out"
            for k in range(4):
                (outside / f"d{k}").mkdir(parents=True)
                (outside / f"d{k}" / "0.png").write_bytes(b"outside %d" % k)
                (outside / f"f{k}.txt").write_bytes(b"outside file %d" % k)
            with staged_output(out, False) as stage:
                for rel in first:
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    (stage / rel).write_bytes(b"tool " + rel.encode())
            for op, rel, k in ops:
                _apply(op, rel, k, out, outside)
            ours = set(read_manifest(out))
            before_out, before_outside = _snapshot(out), _snapshot(outside)
            users = {rel: v for rel, v in before_out.items()
                     if v[0] == "link" or (v[0] == "file" and rel not in ours and rel != MANIFEST)}
            try:
                with staged_output(out, True) as stage:
                    for rel in second:
                        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                        (stage / rel).write_bytes(b"new " + rel.encode())
            except OutputDirError:
                assert _snapshot(out) == before_out
                refused = True
            else:
                refused = False
            after = _snapshot(out)
            assert _snapshot(outside) == before_outside
            for rel, v in users.items():
                assert after.get(rel) == v, rel
            if not refused:
                for rel in second:
                    assert after[rel] == ("file", b"new " + rel.encode())
            assert not [p for p in root.iterdir() if ".partial-" in p.name]

    check()
