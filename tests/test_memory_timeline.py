"""What a bank held over a video, rebuilt from a tracker's decisions (`eval.memory_timeline`)."""

import numpy as np
import pytest

from sam2rl_fast import FastTracker
from sam2rl_fast.eval.memory_timeline import bank_contents, plot_memory_timelines
from tests.helpers import build_random_predictor, moving_square_video


def test_bank_contents_follows_slots():
    # prompt in slot 0, then frames to slots 1, 2, not stored, 1 (replacing frame 1)
    held = bank_contents([0, 1, 2, -1, 1], capacity=3)
    assert [list(np.nonzero(r)[0]) for r in held] == [[0], [0, 1], [0, 1, 2], [0, 1, 2], [0, 2, 4]]
    with pytest.raises(ValueError, match="slot 5 outside a bank of 3"):
        bank_contents([0, 5], capacity=3)


def test_stock_rule_holds_the_prompt_and_the_six_most_recent(tmp_path):
    frames, masks = moving_square_video(12, n_obj=1, seed=0)
    model = build_random_predictor("sam2.1", 128)
    res = FastTracker(frames, model=model, prompt={0: masks[0, 0]}).run()
    held = bank_contents(res.decisions[:, 0], capacity=7)
    for t in range(12):
        assert set(np.nonzero(held[t])[0]) == {0, *range(max(1, t - 5), t + 1)}
    png = plot_memory_timelines({"sam2": res.decisions[:, 0], "prompt only": [0] + [-1] * 11},
                                tmp_path / "m.png", ious={"sam2": np.ones(12), "prompt only": np.zeros(12)})
    assert png.stat().st_size > 5000
