"""The oracle: beam search over memory decisions as lanes of one batch."""

import numpy as np
import pytest

from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl import EpisodeBatch, FeatureCache, Lane
from sam2rl_fast.rl.env import prepare_videos
from sam2rl_fast.rl.oracle import format_oracle, oracle_search

T = 10


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")


@pytest.fixture(scope="module")
def videos(model):
    cache = FeatureCache(model, progress=False)
    items = [(v.frames, v.masks, f"{s}-{i}") for i, s in enumerate(["look-alike", "occlusion"])
             for v in [generate_video(s, 1_000_000 + i, num_frames=T, height=128, width=128)]]
    return prepare_videos(items, model, cache=cache)


def _replay(video, model, actions):
    """The decisions through a one-lane episode: (IoUs, object scores) of frames 2..L-1."""
    b = EpisodeBatch([video], model, 1, obj=0)
    b.reset([Lane(0, 0, 0)])
    ious, scores = [], []
    for a in actions:
        _, _, _, (info,) = b.step([int(a)])
        ious.append(info["iou"])
        scores.append(float(b.head.object_score_logits.reshape(-1)[0]))
    b.close()
    return np.array(ious), np.array(scores)


@pytest.mark.parametrize("beam", [1, 3])
def test_oracle_decisions_replay_to_its_scores(videos, model, beam):
    """The bank copies between lanes are right: the best history's decisions, replayed on
    one lane, give the same per-frame object scores (continuous, memory-dependent) and IoUs."""
    for v in videos:
        r = oracle_search(v, model, beam=beam)
        assert r.actions.shape == (T - 2,) and ((r.actions >= 0) & (r.actions <= 7)).all()
        ious, scores = _replay(v, model, r.actions)
        # one lane against 8 x beam: rounding differs (the bank is bf16) and grows over frames
        np.testing.assert_allclose(scores, r.object_scores, rtol=0, atol=2e-2)
        np.testing.assert_allclose(ious, r.ious[2:], atol=2e-2)
        # ... while another history's scores differ by more than twice that (the check can fail)
        _, prompt_only = _replay(v, model, np.zeros_like(r.actions))
        if not np.array_equal(r.actions, np.zeros_like(r.actions)):
            assert np.abs(prompt_only - r.object_scores).max() > 0.04
        assert r.oracle == pytest.approx(float(np.mean(r.ious[2:])))


def test_oracle_is_never_below_the_stock_rule(videos, model):
    for v in videos:
        stock = EpisodeBatch([v], model, 1, obj=0).stock_ious([Lane(0, 0, 0)])[0]
        r = oracle_search(v, model, beam=2)
        assert r.stock == pytest.approx(float(stock[2:].mean()))
        assert r.oracle >= r.stock - 1e-6 and np.isfinite(r.oracle)
    assert "oracle J" in format_oracle([r]) and v.name in format_oracle([r])


def test_bad_beam_is_a_clear_error(videos, model):
    with pytest.raises(ValueError, match="beam"):
        oracle_search(videos[0], model, beam=0)


def test_headroom_script_reports_the_oracle(capsys, tmp_path):
    import json

    import headroom  # train/headroom.py (tests/conftest.py puts train/ on the path)

    rows = tmp_path / "oracle.json"
    assert headroom.main(["--suite", "occlusion", "--videos", "1", "--frames", "6",
                          "--samples", "2", "--oracle", "1", "--oracle", "2", "--json", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "oracle J" in out and "occlusion: mean oracle gain" in out
    assert "(beam 1;" in out and "(beam 2;" in out and "lane-steps/s" in out
    got = json.loads(rows.read_text())
    assert [r["beam"] for r in got] == [1, 2]
    assert [r["lane_steps"] for r in got] == [8 * 4, 16 * 4]  # beam x 8 lanes, 4 decisions
    assert all(len(r["actions"]) == 4 for r in got)
    with pytest.raises(SystemExit):
        headroom.main(["--suite", "occlusion", "--oracle", "0"])
    assert "--oracle" in capsys.readouterr().err
