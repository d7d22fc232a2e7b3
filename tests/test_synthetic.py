import numpy as np
import pytest

from sam2rl_fast.data.synthetic import SUITES, generate_video, suite_seeds, write_davis


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_deterministic_and_seed_dependent(suite):
    a, b = generate_video(suite, 7), generate_video(suite, 7)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    c = generate_video(suite, 8)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.dtype == np.uint8 and a.masks.dtype == bool
    assert a.masks.shape == (24, SUITES[suite].num_targets, 128, 128)
    assert a.masks[0].any(axis=(1, 2)).all()  # every target is visible on the prompt frame


@pytest.mark.parametrize("seed", suite_seeds("occlusion", "heldout", count=5))
def test_occluded_target_has_empty_mask(seed):
    v = generate_video("occlusion", seed)
    assert v.occluded[:, 0].sum() >= 3  # hidden for several frames
    assert not v.masks[v.occluded[:, 0], 0].any()
    assert v.masks[~v.occluded[:, 0], 0].any(axis=(1, 2)).all()  # visible otherwise


def test_target_leaves_and_reenters_view_in_mixed():
    v = generate_video("mixed", suite_seeds("mixed", "heldout")[0])
    out = v.out_of_view[:, 0]
    assert out.any() and not out[-1] and not v.masks[out, 0].any()


def test_distractors_look_like_the_target_but_are_not_in_the_masks():
    v = generate_video("distractor", 3)
    assert v.info["distractor_shapes"] == v.info["target_shapes"] * 2  # same shape and texture
    assert (v.info["distractor_pixels"] > 0).all()  # on screen throughout, yet not ground truth
    assert v.masks.shape[1] == 1


def test_train_and_heldout_seeds_are_disjoint():
    tr, ho = suite_seeds("easy", "train"), suite_seeds("easy", "heldout")
    assert tr.stop <= ho.start and len(ho) >= 100


def test_bad_suite_and_split():
    with pytest.raises(ValueError, match="unknown suite"):
        generate_video("nope", 0)
    with pytest.raises(ValueError, match="split must be"):
        suite_seeds("easy", "test")


def test_write_davis_layout_round_trips(tmp_path):
    from PIL import Image

    v = generate_video("mixed", 1, num_frames=4)
    root = write_davis(v, tmp_path)
    label = np.array(Image.open(root / "Annotations" / v.name / "00002.png"))
    for k in range(v.masks.shape[1]):
        assert np.array_equal(label == k + 1, v.masks[2, k])
    assert len(list((root / "JPEGImages" / v.name).glob("*.jpg"))) == 4
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_davis(v, tmp_path)  # never overwrite without asking
