"""`sam2rl-fast eval --dataset`: DAVIS-toolkit scoring, its files, SA-V folders, later objects."""

import csv
import re

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from sam2rl_fast.cli import main
from sam2rl_fast.data.datasets import open_dataset
from sam2rl_fast.data.label_png import read_label_png, write_label_png
from sam2rl_fast.data.synthetic import generate_video, write_davis, write_sav
from sam2rl_fast.eval.dataset_eval import non_overlapping, track_video

T = 8


def _videos():
    return [generate_video(s, seed, num_frames=T, height=96, width=96)
            for s, seed in [("mixed", 3), ("occlusion", 2)]]


# ----------------------------------------------------------- the toolkit, from its definitions
def _seg2bmap(m):
    m = m.astype(bool)
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = m[:, 1:], m[1:, :], m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _toolkit_f(res, gt):
    r = int(np.ceil(0.008 * np.linalg.norm(gt.shape)))
    fb, gb = _seg2bmap(res), _seg2bmap(gt)
    fd, gd = binary_dilation(fb, disk(r)), binary_dilation(gb, disk(r))
    nf, ng = fb.sum(), gb.sum()
    if nf == 0 and ng == 0:
        return 1.0
    if nf == 0 or ng == 0:
        return 0.0
    p, rc = (fb & gd).sum() / nf, (gb & fd).sum() / ng
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def _toolkit_stats(v):
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return np.nanmean(v), np.nanmean(v > 0.5), np.nanmean(bins[0]) - np.nanmean(bins[3])


def _toolkit_scores(gt_dir, res_dir, seqs):
    """DAVIS 2017 semi-supervised evaluation of palette PNG folders: per sequence, objects
    1..max id of the first annotation, frames [1:-1], J with union 0 -> 1, F, statistics."""
    J, F, per_seq = {"M": [], "R": [], "D": []}, {"M": [], "R": [], "D": []}, {}
    for seq in seqs:
        names = sorted(p.name for p in (gt_dir / seq).glob("*.png"))
        gt = np.stack([np.array(Image.open(gt_dir / seq / n)) for n in names])
        res = np.stack([np.array(Image.open(res_dir / seq / n)) for n in names])
        n_obj = int(gt[0].max())
        for k in range(1, n_obj + 1):
            g, r = gt[1:-1] == k, res[1:-1] == k
            inter, union = (g & r).sum((1, 2)), (g | r).sum((1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                j = inter / union
            j[np.isclose(union, 0)] = 1
            f = np.array([_toolkit_f(r[t], g[t]) for t in range(len(g))])
            for d, vals in ((J, j), (F, f)):
                for key, x in zip("MRD", _toolkit_stats(vals)):
                    d[key].append(x)
            per_seq[f"{seq}_{k}"] = (J["M"][-1], F["M"][-1])
    glob = [(np.mean(J["M"]) + np.mean(F["M"])) / 2] + [np.mean(d[k]) for d in (J, F) for k in "MRD"]
    return glob, per_seq


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_eval_dataset_writes_the_toolkits_files_and_numbers(tmp_path, capsys):
    root = tmp_path / "DAVIS"
    for v in _videos():
        write_davis(v, root)
    out = tmp_path / "out"
    assert main(["eval", "--dataset", str(root), "--agent", "sam2", "--out", str(out), "--quiet"]) == 0
    assert "J&F-Mean" in capsys.readouterr().out
    seqs = sorted(p.name for p in (root / "JPEGImages").iterdir())
    res = out / "sam2"
    for seq in seqs:  # every frame, a palette PNG named as the frame
        pngs = sorted(p.name for p in (res / seq).glob("*.png"))
        assert pngs == [f"{t:05d}.png" for t in range(T)]
        assert Image.open(res / seq / pngs[0]).mode == "P"
    glob, per_seq = _toolkit_scores(root / "Annotations", res, seqs)
    g = _read_csv(res / "global_results-all.csv")
    assert g[0] == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert [float(x) for x in g[1]] == pytest.approx(glob, abs=5e-4)
    s = _read_csv(res / "per-sequence_results-all.csv")
    assert s[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in s[1:]] == list(per_seq)
    assert [float(x) for r in s[1:] for x in r[1:]] == pytest.approx(
        [x for v in per_seq.values() for x in v], abs=5e-4)
    assert len(s) - 1 == sum(int(np.array(Image.open(root / "Annotations" / q / "00000.png")).max())
                             for q in seqs)


def test_masks_written_are_the_trackers_made_non_overlapping(tmp_path):
    from sam2rl_fast.tracking.tracker import FastTracker

    v = _videos()[0]
    ds = open_dataset(write_davis(v, tmp_path / "d"))
    run = track_video(ds.videos[0], "sam2", None, tmp_path / "res")
    gt = ds.videos[0].ground_truth()
    direct = FastTracker(ds.videos[0].read_frames(), agent="sam2", prompt=gt.prompt()).run()  # the JPEGs
    for t in range(T):
        labels = read_label_png(tmp_path / "res" / v.name / f"{t:05d}.png")
        assert np.array_equal(labels, non_overlapping(direct.masks[t], direct.obj_ids))
    assert [o.frames for o in run.objects] == [list(range(1, T - 1))] * len(run.objects)


def test_non_overlapping_lower_id_wins():
    m = np.zeros((2, 4, 4), bool)
    m[0, :2], m[1, 1:] = True, True
    lab = non_overlapping(m, [3, 1])
    assert (lab[1:] == 1).all() and (lab[0] == 3).all()


def test_objects_appearing_later_and_sparse_annotations(tmp_path):
    v = generate_video("mixed", 3, num_frames=12, height=96, width=96)
    assert v.masks.shape[1] >= 2
    root = write_davis(v, tmp_path / "yt", annotate_every=2)
    ann = root / "Annotations" / v.name
    for t in (0, 2):  # object 2 is annotated from frame 4 on
        lab = read_label_png(ann / f"{t:05d}.png")
        lab[lab == 2] = 0
        write_label_png(lab, ann / f"{t:05d}.png")
    ds = open_dataset(root)
    gt = ds.videos[0].ground_truth()
    assert gt.first_frames()[2] == 4 and list(gt.prompt()) == [0, 4]
    run = track_video(ds.videos[0], "sam2", None, tmp_path / "res")
    by_obj = {o.obj_id: o for o in run.objects}
    assert by_obj[1].frames == [2, 4, 6, 8, 10]  # annotated, not the first or last frame
    labels = [read_label_png(tmp_path / "res" / v.name / f"{t:05d}.png") for t in range(12)]
    assert not any((lab == 2).any() for lab in labels[:4])  # not tracked before its start
    gt_mask = gt.masks[4][gt.obj_ids.index(2)]
    own = labels[4] == 2
    assert (own & gt_mask).sum() / (own | gt_mask).sum() > 0.5  # its prompt, less overlaps
    assert by_obj[2].J[by_obj[2].frames.index(2)] == 1.0  # empty before it starts, as its gt


def test_sav_folder_scores_annotated_frames_and_writes_per_object_masks(tmp_path):
    v = _videos()[1]
    root = write_sav(v, tmp_path / "sav", annotate_every=2)
    out = tmp_path / "out"
    assert main(["eval", "--dataset", str(root), "--agent", "sam2", "--out", str(out), "--quiet"]) == 0
    ds = open_dataset(root)
    run = track_video(ds.videos[0], "sam2", None, None)
    assert run.objects[0].frames == [2, 4]  # annotated 0, 2, 4, 6: the first and last left out
    obj_dir = out / "sam2" / v.name / "000"
    assert len(list(obj_dir.glob("*.png"))) == T
    assert Image.open(obj_dir / "00003.png").mode == "L"
    rows = _read_csv(out / "sam2" / "per-sequence_results-all.csv")
    assert [r[0] for r in rows[1:]] == [f"{v.name}_0"]


@pytest.mark.parametrize("argv, msg", [
    (["--suite", "easy"], "--suite and --dataset exclude each other"),
    (["--split", "val"], "--split val: no split file"),
    (["--sequences", "nope"], "--sequences: \\['nope'\\] not in"),
])
def test_eval_dataset_bad_options_are_clear(tmp_path, capsys, argv, msg):
    root = write_davis(_videos()[1], tmp_path / "d")
    code = None
    try:
        code = main(["eval", "--dataset", str(root), "--out", str(tmp_path / "o"), *argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
        assert re.search(msg, str(e.code))
    else:
        assert re.search(msg, capsys.readouterr().err)
    assert code == 2
    assert not (tmp_path / "o").exists()


def test_synthetic_eval_refuses_dataset_options(tmp_path, capsys):
    assert main(["eval", "--sequences", "a", "--out", str(tmp_path / "o")]) == 2
    assert "--sequences and --resolution need --dataset" in capsys.readouterr().err


def test_training_items_need_dense_annotations_and_split_later_objects(tmp_path):
    from sam2rl_fast.data.datasets import DatasetError, training_items

    v = generate_video("mixed", 3, num_frames=10, height=64, width=64)
    root = write_davis(v, tmp_path / "dense")
    ann = root / "Annotations" / v.name
    for t in range(3):  # object 2 appears on frame 3
        lab = read_label_png(ann / f"{t:05d}.png")
        lab[lab == 2] = 0
        write_label_png(lab, ann / f"{t:05d}.png")
    items = training_items(open_dataset(root), max_frames=6)
    assert [name for _, _, name in items] == [v.name, f"{v.name}@3"]
    (f0, m0, _), (f3, m3, _) = items
    assert f0.shape == (6, 64, 64, 3) and m0.shape == (6, 1, 64, 64)
    assert m3.shape == (6, 1, 64, 64) and np.array_equal(m3[:, 0], v.masks[3:9, 1])
    sparse = write_davis(v, tmp_path / "sparse", annotate_every=5)
    with pytest.raises(DatasetError, match="2 of 10 frames are annotated"):
        training_items(open_dataset(sparse))


def test_train_on_a_dataset_folder(tmp_path):
    from pathlib import Path

    root = write_davis(generate_video("occlusion", 2, num_frames=10, height=96, width=96),
                       tmp_path / "d")
    smoke = Path(__file__).parents[1] / "train" / "configs" / "smoke.toml"
    out = tmp_path / "run"
    assert main(["train", "--config", str(smoke), "--dataset", str(root), "--total-steps", "40",
                 "--out", str(out), "--quiet"]) == 0
    assert (out / "occlusion-2.zip").is_file()
    assert main(["eval", "--dataset", str(root), "--agent", "sam2", "--agent",
                 str(out / "occlusion-2.zip"), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    assert (tmp_path / "ev" / "occlusion-2.zip" / "global_results-all.csv").is_file()


def test_headroom_script_on_a_dataset_folder(tmp_path, capsys):
    import headroom  # train/headroom.py (tests/conftest.py puts train/ on the path)

    root = write_davis(generate_video("occlusion", 2, num_frames=8, height=96, width=96), tmp_path / "d")
    assert headroom.main(["--dataset", str(root), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "occlusion-2" in out and f"{root}: mean stock J" in out
    with pytest.raises(SystemExit):
        headroom.main(["--dataset", str(tmp_path / "nope")])
    assert "dataset folder not found" in capsys.readouterr().err


def test_only_prompt_frames_annotated_scores_nothing_but_says_so(tmp_path):
    """DAVIS test-dev style: the first frame alone is annotated; masks are written, scores are NaN."""
    from sam2rl_fast.eval.dataset_eval import evaluate_dataset

    v = _videos()[1]
    root = write_davis(v, tmp_path / "d", annotate_every=T)
    logs = []
    runs = evaluate_dataset(open_dataset(root), ["sam2"], None, tmp_path / "o", progress=False,
                            log=logs.append)
    assert runs["sam2"][0].objects[0].frames == []
    assert len(list((tmp_path / "o" / "sam2" / v.name).glob("*.png"))) == T
    assert any("no annotated frame to score" in line for line in logs)
    assert _read_csv(tmp_path / "o" / "sam2" / "global_results-all.csv")[1][0] == "nan"


def test_eval_never_writes_outside_its_out_nor_inside_the_dataset(tmp_path, capsys):
    root = write_davis(_videos()[1], tmp_path / "d")
    victim = tmp_path / "annotations_of_mine"
    victim.mkdir()
    (victim / "00000.png").write_bytes(b"mine")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text(f"{victim}\n")
    base = ["eval", "--dataset", str(root), "--agent", "sam2", "--model", "sam2.1_hiera_t",
            "--image-size", "256", "--device", "cpu", "--quiet"]
    assert main([*base, "--split", "val", "--out", str(tmp_path / "o")]) == 2
    assert "is not a video name" in capsys.readouterr().err
    assert [p.name for p in victim.iterdir()] == ["00000.png"] and not (tmp_path / "o").exists()
    inside = root / "Annotations" / "results"
    assert main([*base, "--out", str(inside)]) == 2
    assert "inside the input folder" in capsys.readouterr().err and not inside.exists()


def test_void_only_annotations_say_that_255_is_void(tmp_path):
    v = _videos()[1]
    root = write_davis(v, tmp_path / "d")
    for png in (root / "Annotations" / v.name).iterdir():
        lab = np.array(Image.open(png))
        write_label_png(np.where(lab > 0, 255, 0).astype(np.uint8), png)
    with pytest.raises(ValueError, match="255 marks void"):
        track_video(open_dataset(root).videos[0], "sam2", None, None)
