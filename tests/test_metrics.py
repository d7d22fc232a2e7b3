import numpy as np
import pytest

from sam2rl_fast.eval.metrics import boundary_f, boundary_map, evaluate_video, iou


def square(H=40, W=50, y=10, x=10, s=10):
    m = np.zeros((H, W), bool)
    m[y:y + s, x:x + s] = True
    return m


def test_iou_values():
    a, b = square(), square(x=15)  # 10x10 squares overlapping by 10x5
    assert iou(a, b) == pytest.approx(50 / 150)
    assert iou(a, a) == 1.0
    assert iou(a, np.zeros_like(a)) == 0.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 1.0  # empty vs empty: DAVIS counts 1


def test_boundary_map_of_a_square_is_its_outline():
    b = boundary_map(square(s=10))
    # DAVIS marks a pixel that differs from its right/lower/lower-right neighbour: the row
    # and column just outside the top-left sides and the inner bottom-right sides, 4 x 10.
    assert b.sum() == 40
    assert b[9, 10:20].all() and b[10:20, 9].all() and b[19, 10:20].all() and b[10:20, 19].all()
    assert not b[12:18, 12:18].any()  # interior has no boundary


def test_boundary_f():
    a = square()
    assert boundary_f(a, a) == 1.0
    assert boundary_f(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert boundary_f(a, np.zeros_like(a)) == 0.0
    # a 1-pixel shift lies within the tolerance (ceil(0.008 * 64) = 1 px): F = 1
    assert boundary_f(a, square(x=11)) == 1.0
    # far apart: no boundary pixel matches
    assert boundary_f(a, square(x=35)) == 0.0


def test_evaluate_video_skips_first_frame_and_averages():
    gt = np.stack([square(x=10 + t) for t in range(5)])[:, None]
    pred = gt.copy()
    pred[3, 0] = False  # one missed frame
    r = evaluate_video(pred, gt)
    assert r["J"] == pytest.approx(3 / 4)
    assert r["iou_per_frame"].shape == (5, 1)
    assert 0 <= r["F"] < 1 and r["JF"] == pytest.approx((r["J"] + r["F"]) / 2)


def test_bad_input():
    with pytest.raises(TypeError, match="boolean"):
        iou(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
