"""`sam2rl-fast track`: outputs, refusal to overwrite, clear errors."""

import csv
import json

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
    with pytest.raises(SystemExit, match="needs 4 numbers"):
        main(["track", folder, "--box", "1,2,3", *base, "--out", str(tmp_path / "c")])
    assert main(["track", folder, "--box", "0,0,9,9", "--model", str(tmp_path / "x.pt"), "--device",
                 "cpu", "--quiet", "--out", str(tmp_path / "d")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
