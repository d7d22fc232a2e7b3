"""Dataset folders (DAVIS-like and SA-V layouts): reading, checks with clear errors, DAVIS measures."""

import numpy as np
import pytest
from PIL import Image

from sam2rl_fast.data.datasets import DatasetError, open_dataset
from sam2rl_fast.data.label_png import palette, read_label_png, write_label_png
from sam2rl_fast.data.synthetic import generate_video, write_davis, write_sav
from sam2rl_fast.eval.metrics import db_statistics


def _video(suite="mixed", seed=3, T=6, size=64):
    return generate_video(suite, seed, num_frames=T, height=size, width=size + 16)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    for suite, seed in [("mixed", 3), ("easy", 5)]:
        write_davis(_video(suite, seed), root)
    return root


def test_palette_is_davis_voc_colour_map():
    p = palette()
    assert len(p) == 768
    assert p[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # DAVIS' first colours
    assert p[255 * 3:] == [224, 224, 192]  # the void colour


def test_davis_layout_reads_every_video_and_object(davis_root):
    ds = open_dataset(davis_root)
    assert ds.layout == "davis" and ds.split is None
    assert [v.name for v in ds.videos] == sorted(v.name for v in ds.videos)
    v = next(x for x in ds.videos if x.name.startswith("mixed"))
    src = _video("mixed", 3)
    gt = v.ground_truth()
    assert gt.obj_ids == [k + 1 for k in range(src.masks.shape[1]) if src.masks[:, k].any()]
    for f in range(src.masks.shape[0]):
        for i, o in enumerate(gt.obj_ids):
            assert np.array_equal(gt.masks[f][i], src.masks[f, o - 1])
    assert v.read_frames().shape == src.frames.shape
    # each object prompted on its first visible annotation
    firsts = gt.first_frames()
    for f, objs in gt.prompt().items():
        for o, m in objs.items():
            assert firsts[o] == f and np.array_equal(m, src.masks[f, o - 1])


def test_davis_480p_split_file_and_sequences(tmp_path):
    root = tmp_path / "DAVIS"
    for suite, seed in [("easy", 1), ("easy", 2), ("occlusion", 1)]:
        v = _video(suite, seed, T=4)
        write_davis(v, tmp_path / "tmp")
        for kind in ("JPEGImages", "Annotations"):
            (root / kind / "480p").mkdir(parents=True, exist_ok=True)
            (tmp_path / "tmp" / kind / v.name).rename(root / kind / "480p" / v.name)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("easy-1\nocclusion-1\n")
    ds = open_dataset(root, split="val")
    assert [v.name for v in ds.videos] == ["easy-1", "occlusion-1"]
    assert ds.videos[0].frames[0].parent.name == "easy-1"
    assert ds.videos[0].frames[0].parent.parent.name == "480p"
    assert [v.name for v in open_dataset(root, split="val", sequences="occlusion-1").videos] == ["occlusion-1"]
    with pytest.raises(DatasetError, match="--sequences.*easy-2"):
        open_dataset(root, split="val", sequences=["easy-2"])
    with pytest.raises(DatasetError, match="--split test.*val|--split test"):
        open_dataset(root, split="test")
    (root / "ImageSets" / "2017" / "bad.txt").write_text("easy-1\nnot-there\n")
    with pytest.raises(DatasetError, match="bad.txt names video 'not-there'"):
        open_dataset(root, split="bad")


def test_sparse_annotations_and_sav_layout(tmp_path):
    v = _video("mixed", 3, T=9)
    ds = open_dataset(write_davis(v, tmp_path / "ytvos", annotate_every=4))
    assert sorted(ds.videos[0].annotations) == [0, 4, 8]
    ds = open_dataset(write_sav(v, tmp_path / "sav"))
    assert ds.layout == "sav"
    gt = ds.videos[0].ground_truth()
    assert sorted(gt.masks) == [0, 4, 8] and gt.obj_ids == list(range(v.masks.shape[1]))
    for f in gt.masks:
        assert np.array_equal(gt.masks[f], v.masks[f]) and gt.void[f] is None
    (tmp_path / "sav" / "sav_val.txt").write_text(v.name + "\n")
    assert open_dataset(tmp_path / "sav", split="val").videos[0].name == v.name


def test_split_subfolder_layout(tmp_path):
    """YouTube-VOS / MOSE: ROOT/train/JPEGImages, read with --split train."""
    v = _video("easy", 4, T=3)
    write_davis(v, tmp_path / "train")
    ds = open_dataset(tmp_path, split="train")
    assert ds.root == tmp_path / "train" and [x.name for x in ds.videos] == [v.name]


def test_void_labels_are_read_apart_from_objects(tmp_path):
    v = _video("easy", 4, T=3)
    root = write_davis(v, tmp_path)
    png = root / "Annotations" / v.name / "00001.png"
    lab = read_label_png(png)
    lab[:4] = 255
    write_label_png(lab, png)
    gt = open_dataset(root).videos[0].ground_truth()
    assert gt.obj_ids == [1]  # 255 is not an object
    assert gt.void[1][:4].all() and not gt.void[1][4:].any() and gt.void[0] is None
    # the DAVIS toolkit's semi-supervised scoring reads 255 as background, as eval does


def test_db_statistics_match_the_toolkits_definitions():
    v = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(0.55)
    assert recall == pytest.approx(0.5)  # strictly above 0.5: 5 of 10
    # quarters cut at round(linspace(1, 10, 5)) - 1 = [0, 2, 5, 7, 9], each bin [a, b]
    assert decay == pytest.approx(np.mean(v[0:3]) - np.mean(v[7:10]))
    m1, r1, d1 = db_statistics([0.7])
    assert (m1, r1, d1) == (pytest.approx(0.7), 1.0, 0.0)
    assert all(np.isnan(x) for x in db_statistics([]))


@pytest.mark.parametrize("case", ["no-layout", "no-annotations", "extra-annotation", "rgb-png",
                                  "wrong-size", "corrupt-png", "empty-video"])
def test_bad_dataset_folders_name_the_file(tmp_path, case):
    v = _video("easy", 4, T=3)
    root = write_davis(v, tmp_path / "d")
    ann = root / "Annotations" / v.name
    if case == "no-layout":
        (tmp_path / "x").mkdir()
        with pytest.raises(DatasetError, match="matches no dataset layout"):
            open_dataset(tmp_path / "x")
        return
    if case == "no-annotations":
        for p in ann.iterdir():
            p.unlink()
        match = "has no annotations"
    elif case == "extra-annotation":
        (ann / "00000.png").rename(ann / "00007.png")
        match = "00007.png: no frame 00007.*3 frames"
    elif case == "rgb-png":
        Image.new("RGB", (80, 64)).save(ann / "00001.png")
        match = "00001.png: a RGB image, not a palette or label PNG"
    elif case == "wrong-size":
        write_label_png(np.zeros((32, 32), np.uint8), ann / "00002.png")
        match = "00002.png: the annotation is 32x32, its frame is 80x64"
    elif case == "corrupt-png":
        (ann / "00001.png").write_bytes(b"\x89PNG not really")
        match = "00001.png: cannot read the annotation"
    else:
        for p in (root / "JPEGImages" / v.name).iterdir():
            p.unlink()
        match = "holds no .*frames"
    with pytest.raises(DatasetError, match=match):
        open_dataset(root).videos[0].ground_truth()


# ------------------------------------------------------------------ names are names; checks at opening
def _two_video_root(tmp_path):
    root = tmp_path / "DS"
    for suite, seed in [("easy", 1), ("easy", 2)]:
        write_davis(_video(suite, seed, T=3), root)
    (root / "ImageSets").mkdir()
    return root


@pytest.mark.parametrize("line", ["ABS", "../easy-1", "easy-1/../easy-2", ".", "a\\b"])
def test_split_lines_that_are_paths_are_refused(tmp_path, line):
    root = _two_video_root(tmp_path)
    victim = tmp_path / "mine"
    victim.mkdir()
    line = str(victim) if line == "ABS" else line
    (root / "ImageSets" / "val.txt").write_text(f"easy-1\n{line}\n")
    with pytest.raises(DatasetError, match="is not a video name"):
        open_dataset(root, split="val")
    with pytest.raises(DatasetError, match="--sequences.*is not a video name"):
        open_dataset(root, sequences=["easy-1", str(victim)])


def test_a_video_listed_twice_is_refused(tmp_path):
    root = _two_video_root(tmp_path)
    (root / "ImageSets" / "val.txt").write_text("easy-1\neasy-2\neasy-1\n")
    with pytest.raises(DatasetError, match="val.txt names \\['easy-1'\\] more than once"):
        open_dataset(root, split="val")
    with pytest.raises(DatasetError, match="--sequences names \\['easy-2'\\] more than once"):
        open_dataset(root, sequences="easy-2,easy-2,easy-1")


@pytest.mark.parametrize("kind", ["rgb", "16-bit", "wrong-size"])
def test_a_bad_annotation_of_any_video_fails_at_opening(tmp_path, kind):
    root = _two_video_root(tmp_path)
    png = root / "Annotations" / "easy-2" / "00001.png"
    if kind == "rgb":
        Image.new("RGB", (80, 64)).save(png)
    elif kind == "16-bit":
        Image.fromarray(np.zeros((64, 80), np.uint16)).save(png)
    else:
        write_label_png(np.zeros((32, 32), np.uint8), png)
    with pytest.raises(DatasetError, match="easy-2/00001.png"):
        open_dataset(root)  # not only once the first video was tracked


def test_a_missing_split_file_is_named_once(tmp_path):
    root = _two_video_root(tmp_path)
    (root / "ImageSets" / "2017").mkdir()
    with pytest.raises(DatasetError) as e:
        open_dataset(root, split="test")
    assert "test.txttest.txt" not in str(e.value) and "ImageSets/2017/test.txt" in str(e.value)
