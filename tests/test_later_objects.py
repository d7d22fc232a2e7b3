"""Objects that appear later (YouTube-VOS / MOSE style): `{0: {1: m1}, k: {2: m2}}` starts
object 2 on frame k with a memory of its own, beside object 1's."""

import numpy as np
import pytest

from sam2rl_fast import FastTracker
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.policies import SamuraiPolicy
from sam2rl_fast.tracking.tracker import PromptError

T, K = 18, 11  # target 0 of this video leaves the view on frame 4 and comes back on frame 11


@pytest.fixture(scope="module")
def model():
    return build_model(None, device="cpu")  # the bundled model: masks that track something


@pytest.fixture(scope="module")
def video():
    v = generate_video("mixed", 3, num_frames=T, height=96, width=96)
    assert v.masks[K, 0].any() and not v.masks[K - 1, 0].any() and v.masks[:, 1].any((1, 2)).all()
    return v


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def assert_same(res, k, ref, j, frames=slice(None), ref_frames=slice(None)):
    """Object k of `res` on `frames` is, bit for bit, object j of `ref` on `ref_frames`."""
    np.testing.assert_array_equal(res.masks[frames, k], ref.masks[ref_frames, j])
    np.testing.assert_array_equal(res.scores[frames, k], ref.scores[ref_frames, j])
    np.testing.assert_array_equal(res.ious[frames, k], ref.ious[ref_frames, j])
    np.testing.assert_array_equal(res.decisions[frames, k], ref.decisions[ref_frames, j])


@pytest.mark.parametrize("agent", ["sam2", "samurai", "dam4sam"])
def test_a_later_object_is_tracked_with_its_own_memory(model, video, agent):
    m1, m2 = video.masks[0, 1], video.masks[K, 0]
    tr = FastTracker(video.frames, agent=agent, model=model, prompt={0: {1: m1}, K: {2: m2}})
    res = tr.run()
    assert res.obj_ids == [1, 2] and res.masks.shape == (T, 2, 96, 96) and res.tracked.all()
    # (a) before its start: nothing; on it: its prompt mask (mask prompts are the output)
    assert not res.masks[:K, 1].any()
    assert np.isnan(res.scores[:K, 1]).all() and np.isnan(res.ious[:K, 1]).all()
    assert (res.decisions[:K, 1] == -2).all() and (res.decisions[K:, 1] >= -1).all()
    assert res.decisions[K, 1] >= 0  # the prompt is stored
    assert iou(res.masks[K, 1], m2) > 0.9
    # equal empty masks would prove nothing: most of the frames from K on hold the object
    assert res.masks[K:, 1].any((1, 2)).mean() > 0.5, res.masks[K:, 1].any((1, 2))
    # ... from it on: the frames from K tracked alone. Pointer distances and memory positions
    # are relative to the frame; SAM 2 normalises pointer distances by min(video length, 16),
    # the full video's here (a stream of frames K.. with num_frames=T, not an array of T-K).
    alone = FastTracker(iter(video.frames[K:]), agent=agent, model=model, prompt={2: m2},
                        num_frames=T).run()
    assert_same(res, 1, alone, 0, slice(K, None))
    # ... which is also the object alone, prompted on frame K of the whole video
    assert_same(res, 1, FastTracker(video.frames, agent=agent, model=model, prompt={K: {2: m2}}).run(), 0)
    # (b) object 1 as if object 2 were not there
    assert_same(res, 0, FastTracker(video.frames, agent=agent, model=model, prompt={1: m1}).run(), 0)
    # one bank and one policy per start frame; the tracker's own are the first's
    assert [c.start for c in tr.cohorts] == [0, K] and tr.prompt_frame == 0
    assert tr.policy is tr.cohorts[0].policy and tr.cohorts[1].policy is not tr.policy
    assert tr.bank is tr.step.bank is tr.bank_of(1)[0] and tr.bank_of(2) == (tr.cohorts[1].step.bank, 0)
    assert sorted(tr.bank_of(2)[0].slot_map(0, cond=True)) == [K]


def test_a_policy_instance_is_copied_per_start_frame(model, video):
    prompt = {0: {1: video.masks[0, 1]}, K: {2: video.masks[K, 0]}}
    pol = SamuraiPolicy()
    tr = FastTracker(video.frames, agent=pol, model=model, prompt=prompt)
    res = tr.run()
    a, b = (c.policy for c in tr.cohorts)
    assert a is pol and isinstance(b, SamuraiPolicy) and b is not pol and a.kf is not b.kf
    ref = FastTracker(video.frames, agent="samurai", model=model, prompt=prompt).run()
    np.testing.assert_array_equal(res.masks, ref.masks)
    np.testing.assert_array_equal(res.decisions, ref.decisions)


def test_corrections_go_to_each_objects_own_memory(model, video):
    """The earliest frame naming an object is its start; later ones correct it."""
    m = video.masks
    c = 14
    tr = FastTracker(video.frames, model=model,
                     prompt={0: {1: m[0, 1]}, K: {2: m[K, 0]}, c: {2: m[c, 0], 1: m[c, 1]}})
    res = tr.run()
    assert res.obj_ids == [1, 2]
    b1, l1 = tr.bank_of(1)
    b2, l2 = tr.bank_of(2)
    assert sorted(b1.slot_map(l1, cond=True)) == [0, c] and sorted(b2.slot_map(l2, cond=True)) == [K, c]
    assert b1.capacity == b2.capacity == 8  # one correction each: one more slot each
    one = FastTracker(video.frames, model=model, prompt={0: {1: m[0, 1]}, c: {1: m[c, 1]}}).run()
    two = FastTracker(video.frames, model=model, prompt={K: {2: m[K, 0]}, c: {2: m[c, 0]}}).run()
    assert_same(res, 0, one, 0)
    assert_same(res, 1, two, 0)
    # A prompt for object 1 on object 2's start frame is a correction of object 1.
    tr = FastTracker(video.frames, model=model, prompt={0: {1: m[0, 1]}, K: {2: m[K, 0], 1: m[K, 1]}})
    tr.run()
    assert [(c.start, c.lanes, sorted(c.corrections)) for c in tr.cohorts] == [(0, [0], [K]), (K, [1], [])]


def test_object_order_and_streams(model, video):
    m = video.masks
    # by start frame, then as that frame's dict lists them, however the dict is ordered
    tr = FastTracker(video.frames[:8], model=model,
                     prompt={5: {"late": m[5, 1]}, 0: {"z": m[0, 1], "a": m[0, 0]}})
    assert tr.obj_ids == ["z", "a", "late"] and [c.lanes for c in tr.cohorts] == [[0, 1], [2]]
    # nothing before the first start: frames 0-1 untracked; object 2 empty on frames 2-4
    prompt = {2: {1: m[2, 1]}, 5: {2: m[5, 1]}}
    ref = FastTracker(video.frames[:8], model=model, prompt=prompt).run()
    assert not ref.tracked[:2].any() and ref.tracked[2:].all()
    assert (ref.decisions[:2] == -2).all() and (ref.decisions[2:5, 1] == -2).all()
    # a stream of unknown length: the same frames, the same masks with the length hint
    streamed = list(FastTracker(iter(video.frames[:8]), model=model, prompt=prompt, num_frames=8))
    assert [fr.index for fr in streamed] == list(range(2, 8))
    np.testing.assert_array_equal(np.stack([fr.masks for fr in streamed]), ref.masks[2:])
    assert [fr.index for fr in FastTracker(iter(video.frames[:8]), model=model, prompt=prompt)] == \
        list(range(2, 8))


def test_bad_prompts_are_still_clear_errors(model, video):
    frames, m = video.frames[:4], video.masks
    make = lambda p: FastTracker(frames, model=model, prompt=p)  # noqa: E731
    with pytest.raises(PromptError, match="prompt frame -1 is negative"):
        make({-1: {1: m[0, 1]}, 2: {2: m[2, 0]}})
    with pytest.raises(PromptError, match="every frame's prompt dict is empty"):
        make({0: {}, 2: {}})
    with pytest.raises(PromptError, match="non-empty dict"):
        make({})
    with pytest.raises(PromptError, match=r"^prompt on frame 9, the video has 4 frames \(frames 0..3\)"):
        make({0: {1: m[0, 1]}, 9: {2: m[2, 1]}})  # a later object past the end
    with pytest.raises(PromptError, match="correction prompt on frame 9, the video has 4 frames"):
        make({0: {1: m[0, 1]}, 2: {2: m[2, 1]}, 9: {2: m[2, 1]}})
    with pytest.raises(PromptError, match="object 2: the prompt mask is empty"):
        make({0: {1: m[0, 1]}, 2: {2: np.zeros((96, 96), bool)}})
    with pytest.raises(PromptError, match="ended after 4 frame\\(s\\), before the prompt on frame 6"):
        FastTracker(iter(list(frames)), model=model, prompt={0: {1: m[0, 1]}, 6: {2: m[2, 1]}}).run()
