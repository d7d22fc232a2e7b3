"""Paired bootstrap intervals and the SAM2RL gain bar (`sam2rl_fast.eval.stats`)."""

import numpy as np
import pytest

from sam2rl_fast.eval.stats import gain_target, paired_bootstrap, relative_gain


def test_paired_bootstrap_covers_a_known_shift_and_is_reproducible():
    rng = np.random.default_rng(3)
    b = rng.uniform(0.3, 0.9, 40)
    a = b + 0.02 + rng.normal(0, 0.01, 40)  # paired: a per-video shift with small noise
    d = paired_bootstrap(a, b)
    assert d.lo < 0.02 < d.hi and d.above_zero and d.n == 40
    assert d.mean == pytest.approx(float((a - b).mean()))
    assert paired_bootstrap(a, b) == d  # a fixed seed: the same interval
    # no real difference: the interval straddles 0
    c = b + rng.normal(0, 0.01, 40)
    assert not paired_bootstrap(c, b).above_zero and paired_bootstrap(c, b).lo < 0 < paired_bootstrap(c, b).hi
    # pairing matters: the same shift on unpaired noisy scores would not be this tight
    assert d.hi - d.lo < 0.02


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([0.1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([0.1], [0.2], level=1.5)


def test_relative_gain_is_a_ratio_of_means():
    # a video the stock rule loses (J 0.01) must not dominate: per-video ratios would give +1000%
    assert relative_gain([0.11, 0.8], [0.01, 0.8]) == pytest.approx(0.1 / 0.81)


def test_gain_target_ratio_and_floor():
    stock = np.array([0.5, 0.6, 0.7])
    # the best heuristic gains 0.02 J (3.3% relative): agents need 3x that relative gain
    t = gain_target(stock + 0.07, stock, {"samurai": stock + 0.02, "dam4sam": stock - 0.05})
    assert t["best_heuristic"] == "samurai" and t["met"] and "3x samurai" in t["target"]
    assert not gain_target(stock + 0.05, stock, {"samurai": stock + 0.02, "dam4sam": stock})["met"]
    # heuristics do nothing (< 0.005 J): the floor of 0.015 J decides, whatever the ratio
    t = gain_target(stock + 0.01, stock, {"samurai": stock - 0.01, "dam4sam": stock + 0.001})
    assert not t["met"] and "0.015" in t["target"]
    assert gain_target(stock + 0.016, stock, {"samurai": stock - 0.01, "dam4sam": stock})["met"]
