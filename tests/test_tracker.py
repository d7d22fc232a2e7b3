"""`FastTracker`: parity with stock SAM2VideoPredictor, batching, video sources, bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sam2rl_fast import FastTracker
from sam2rl_fast.model.loading import ModelError, build_model, infer_config
from sam2rl_fast.policies import ObservationLayoutError, VectorPolicy
from sam2rl_fast.tracking.tracker import PromptError
from sam2rl_fast.tracking.video import VideoError, open_video, write_video
from tests.helpers import (
    build_random_predictor,
    moving_square_video,
    shift_object_scores,
    write_jpeg_folder,
)


def present_everywhere(predictor):
    return shift_object_scores(predictor, 20.0)


def mask_iou(a, b):
    inter, union = (a & b).sum((-2, -1)), (a | b).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def stock_masks(predictor, folder, prompts, kind, prompt_frame=0):
    state = predictor.init_state(folder)
    for k, p in prompts.items():
        if kind == "mask":
            predictor.add_new_mask(state, prompt_frame, k, p)
        else:
            predictor.add_new_points_or_box(state, prompt_frame, k, box=np.array(p, np.float32))
    return {f: (m > 0).cpu().numpy()[:, 0] for f, _, m in predictor.propagate_in_video(state)}


PARITY = [
    # config, image size, objects, prompt kind, frames
    pytest.param("sam2.1", 256, 1, "mask", 10, id="sam2.1-256-1obj-mask"),
    pytest.param("sam2.1", 256, 3, "box", 10, id="sam2.1-256-3obj-box"),
    pytest.param("sam2", 256, 3, "mask", 10, id="sam2-256-3obj-mask"),
    pytest.param("sam2", 256, 1, "box", 10, id="sam2-256-1obj-box"),
    pytest.param("sam2.1", 512, 3, "mask", 5, id="sam2.1-512-3obj-mask"),
    pytest.param("sam2", 512, 1, "box", 5, id="sam2-512-1obj-box"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config,size,n_obj,kind,T", PARITY)
def test_sam2_agent_matches_stock_every_frame(tmp_path, config, size, n_obj, kind, T):
    predictor = present_everywhere(build_random_predictor(config, size))
    frames, masks = moving_square_video(T, n_obj=n_obj, seed=n_obj + size)
    folder = write_jpeg_folder(frames, tmp_path / "video")
    prompts = {k: masks[0, k] if kind == "mask" else box_of(masks[0, k]) for k in range(n_obj)}
    ref = stock_masks(predictor, folder, prompts, kind)
    res = FastTracker(folder, agent="sam2", model=predictor, prompt=prompts).run()
    assert res.masks.shape == (T, n_obj, 96, 128) and res.tracked.all()
    for f in range(T):
        iou = mask_iou(res.masks[f], ref[f])
        assert (iou >= 0.99).all(), f"frame {f}: IoU with stock {iou}"
    assert res.masks[1:].sum((-2, -1)).min() > 0, "parity on empty masks proves nothing"
    assert (res.decisions[1:] >= 0).all()  # the stock rule stores every frame
    # The oneDNN Linear override lives only while tracking: the user's model is left as it was.
    assert not any("forward" in m.__dict__ for m in predictor.modules())


@pytest.mark.slow
@pytest.mark.parametrize("config,kind", [("sam2.1", "mask"), ("sam2.1", "box"), ("sam2", "box")])
def test_correction_on_a_later_frame_matches_stock(tmp_path, config, kind):
    """Prompt object 0 again on frame 5: stock tracks frames 0-4, takes the new prompt on
    frame 5 (not tracked yet), then propagates from there; a streaming tracker does the same."""
    predictor = present_everywhere(build_random_predictor(config, 256))
    frames, masks = moving_square_video(10, n_obj=2, seed=3)
    folder = write_jpeg_folder(frames, tmp_path / "video")
    state = predictor.init_state(folder)
    for k in range(2):
        predictor.add_new_mask(state, 0, k, masks[0, k])
    ref = {f: (m > 0).cpu().numpy()[:, 0]
           for f, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=4)}
    corr = masks[5, 0] if kind == "mask" else box_of(masks[5, 0])
    if kind == "mask":
        predictor.add_new_mask(state, 5, 0, corr)
    else:
        predictor.add_new_points_or_box(state, 5, 0, box=np.array(corr, np.float32))
    ref |= {f: (m > 0).cpu().numpy()[:, 0] for f, _, m in predictor.propagate_in_video(state, start_frame_idx=5)}
    res = FastTracker(folder, agent="sam2", model=predictor,
                      prompt={0: {0: masks[0, 0], 1: masks[0, 1]}, 5: {0: corr}}).run()
    for f in range(10):
        iou = mask_iou(res.masks[f], ref[f])
        assert (iou >= 0.99).all(), f"frame {f}: IoU with stock {iou}"
    assert (res.masks[5, 0] != res.masks[4, 0]).any()  # the correction did change object 0
    tr = FastTracker(folder, agent="sam2", model=predictor, prompt={0: {0: masks[0, 0]}, 5: {0: corr}})
    for _ in tr:
        pass
    assert sorted(tr.bank.slot_map(0, cond=True)) == [0, 5]


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["samurai", "agent"])
def test_corrections_with_other_policies(agent):
    """Heuristics get a slot more; a learned agent's fixed bank gives up its oldest memory."""
    predictor = present_everywhere(build_random_predictor("sam2.1", 256))
    frames, masks = moving_square_video(12, n_obj=1, seed=4)
    if agent == "agent":  # stores every frame round robin: the bank is full at the correction
        agent = VectorPolicy(RoundRobin(), capacity=7)
    tr = FastTracker(frames, agent=agent, model=predictor, prompt={0: {0: masks[0, 0]}, 9: {0: masks[9, 0]}})
    res = tr.run()
    assert mask_iou(res.masks[9, 0], masks[9, 0]) > 0.9  # the corrected frame shows the prompt
    assert sorted(tr.bank.slot_map(0, cond=True)) == [0, 9]
    assert tr.bank.capacity == (8 if isinstance(agent, str) else 7)


class RoundRobin:
    """Actions 2, 3, ..., 7, 2, ...: store every frame in slots 1-6 in turn."""

    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        return np.array([2 + (self.calls - 1) % 6])


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["samurai", "dam4sam"])
def test_batched_objects_equal_objects_alone(agent):
    """Objects tracked together (grouped when their memories differ) = each tracked alone."""
    predictor = present_everywhere(build_random_predictor("sam2.1", 256))
    frames, masks = moving_square_video(12, n_obj=2, seed=5)
    prompts = {"a": masks[0, 0], "b": masks[0, 1]}
    both = FastTracker(frames, agent=agent, model=predictor, prompt=prompts).run()
    for k, obj in enumerate(prompts):
        alone = FastTracker(frames, agent=agent, model=predictor, prompt={obj: prompts[obj]}).run()
        assert (mask_iou(both.masks[:, k], alone.masks[:, 0]) >= 0.99).all()
        np.testing.assert_array_equal(both.decisions[:, k], alone.decisions[:, 0])
    assert ((both.decisions >= -2) & (both.decisions < 7)).all()


def test_sources_stream_and_prompt_frame(tmp_path):
    predictor = build_random_predictor("sam2.1", 256)
    frames, masks = moving_square_video(6, n_obj=1, seed=1)
    prompt = {2: {7: masks[2, 0]}}  # object id 7, prompted on frame 2
    ref = FastTracker(frames, model=predictor, prompt=prompt).run()
    assert ref.obj_ids == [7]
    assert not ref.tracked[:2].any() and ref.tracked[2:].all()
    assert not ref.masks[:2].any()
    # The same frames from a folder and as an array give the same masks.
    folder = write_jpeg_folder(frames, tmp_path / "jpg")
    from PIL import Image

    decoded = np.stack([np.array(Image.open(p)) for p in sorted(Path(folder).iterdir())])
    res_folder = FastTracker(folder, model=predictor, prompt=prompt).run()
    res_array = FastTracker(decoded, model=predictor, prompt=prompt).run()
    np.testing.assert_array_equal(res_folder.masks, res_array.masks)
    # A stream (a generator) has no length, so the pointer encoding is normalised by
    # sam2's maximum of 16 frames instead of min(T, 16): nearly the same masks.
    res_stream = FastTracker((f for f in decoded), model=predictor, prompt=prompt).run()
    assert (mask_iou(res_stream.masks, res_array.masks) >= 0.95).all()
    streamed = [fr.index for fr in FastTracker(iter(frames), model=predictor, prompt=prompt)]
    assert streamed == [2, 3, 4, 5]


def test_video_file_roundtrip(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    frames = np.stack([np.stack([xx * 4, yy * 5, (xx + yy + 8 * t) % 256], -1)
                       for t in range(5)]).astype(np.uint8)  # smooth: a codec keeps it
    path = write_video(frames, tmp_path / "v.mp4", fps=5)
    src = open_video(path)
    got = np.stack(list(src))
    assert got.shape == frames.shape and src.num_frames == 5
    assert np.abs(got.astype(int) - frames).mean() < 8  # lossy codec, same content


def test_bad_videos(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no"):
        open_video(tmp_path / "empty")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(VideoError):
        list(open_video(bad))
    with pytest.raises(VideoError, match=r"\[T, H, W, 3\]"):
        open_video(np.zeros((4, 8, 8)))
    with pytest.raises(VideoError, match="no frames"):
        open_video(iter([])).height


def test_bad_prompts():
    predictor = build_random_predictor("sam2.1", 256)
    frames, masks = moving_square_video(3, n_obj=1)
    make = lambda p: FastTracker(frames, model=predictor, prompt=p)  # noqa: E731
    with pytest.raises(PromptError, match="inside the 128x96 frame"):
        make({0: (10, 10, 500, 20)})
    with pytest.raises(PromptError, match="mask is 64x48"):
        make({0: np.ones((48, 64), bool)})
    with pytest.raises(PromptError, match="empty"):
        make({0: np.zeros((96, 128), bool)})
    with pytest.raises(PromptError, match="outside"):
        make({0: ([[200, 5]], [1])})
    # an object first named on a later frame starts there (tests/test_later_objects.py) ...
    assert make({0: {1: masks[0, 0]}, 2: {2: masks[2, 0]}}).obj_ids == [1, 2]
    with pytest.raises(PromptError, match="prompt on frame 7, the video has 3 frames"):
        make({0: {1: masks[0, 0]}, 7: {2: masks[2, 0]}})  # ... within the video
    with pytest.raises(PromptError, match="empty"):
        make({0: {}})
    with pytest.raises(PromptError, match="has 3 frames"):
        make({5: {1: masks[0, 0]}})
    with pytest.raises(PromptError, match="non-empty dict"):
        make(None)
    with pytest.raises(ValueError, match="unknown agent"):
        FastTracker(frames, agent="fifo", model=predictor, prompt={0: masks[0, 0]})


def test_agent_with_other_layout_is_refused():
    predictor = build_random_predictor("sam2.1", 256)
    frames, masks = moving_square_video(3, n_obj=1)
    agent = VectorPolicy(lambda obs: np.zeros(len(obs), int), capacity=5)
    with pytest.raises(ObservationLayoutError, match="bank of 5 slots"):
        FastTracker(frames, agent=agent, model=predictor, prompt={0: masks[0, 0]}).run()
    agent = VectorPolicy(lambda obs: np.zeros(len(obs), int), capacity=7, layout="other/v0")
    with pytest.raises(ObservationLayoutError, match="layout 'other/v0'"):
        FastTracker(frames, agent=agent, model=predictor, prompt={0: masks[0, 0]}).run()


def test_checkpoints_load_and_mismatches_are_named(tmp_path):
    predictor = build_random_predictor("sam2", 256)
    ckpt = tmp_path / "sam2_tiny.pt"
    torch.save({"model": predictor.state_dict()}, ckpt)
    assert infer_config(predictor.state_dict()) == "configs/sam2/sam2_hiera_t.yaml"
    loaded = build_model(str(ckpt), device="cpu", image_size=256)
    for k, v in predictor.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(ModelError, match="trained with configs/sam2/sam2_hiera_t.yaml"):
        build_model(str(ckpt), config="sam2.1_hiera_t", device="cpu", image_size=256)
    with pytest.raises(ModelError, match="not found"):
        build_model(str(tmp_path / "nope.pt"), device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        build_model(str(tmp_path / "junk.pt"), device="cpu")
    with pytest.raises(ModelError, match="unknown sam2 config"):
        build_model("sam3_hiera_x", device="cpu")


def test_memory_is_bounded_by_the_bank():
    predictor = build_random_predictor("sam2.1", 256)
    frames, masks = moving_square_video(20, H=48, W=64, n_obj=2, seed=2)
    tracker = FastTracker(frames, model=predictor, prompt={0: masks[0, 0], 1: masks[0, 1]})
    sizes = []
    for fr in tracker:
        sizes.append((tracker.bank.nbytes, len(tracker.bank.occupied(0))))
    assert len({s for s, _ in sizes}) == 1  # preallocated once
    assert max(n for _, n in sizes) == 7  # 1 prompt + 6 recent, whatever the length


@pytest.mark.cuda
@pytest.mark.parametrize("config", ["sam2.1", "sam2"])
def test_sam2_agent_matches_stock_on_cuda(tmp_path, config):
    predictor = present_everywhere(build_random_predictor(config, 512)).cuda()
    frames, masks = moving_square_video(8, n_obj=2, seed=7)
    folder = write_jpeg_folder(frames, tmp_path / "video")
    prompts = {k: masks[0, k] for k in range(2)}
    ref = stock_masks(predictor, folder, prompts, "mask")
    tracker = FastTracker(folder, agent="sam2", model=predictor, prompt=prompts)
    res = tracker.run()
    assert tracker.device.type == "cuda" and tracker.bank.feats.is_cuda
    for f in range(8):
        iou = mask_iou(res.masks[f], ref[f])
        assert (iou >= 0.99).all(), f"frame {f}: IoU with stock {iou}"
    assert res.masks[1:].sum((-2, -1)).min() > 0


def test_profile_off_times_whole_frames_and_changes_nothing_else():
    predictor = present_everywhere(build_random_predictor("sam2.1", 256))
    frames, masks = moving_square_video(5, n_obj=1, seed=2)
    staged = FastTracker(frames, model=predictor, prompt={0: masks[0, 0]}).run()  # CPU default: on
    whole = FastTracker(frames, model=predictor, prompt={0: masks[0, 0]}, profile=False).run()
    np.testing.assert_array_equal(staged.masks, whole.masks)
    assert (staged.timings["image_encoder"] > 0).all() and (staged.timings["frame"] == 0).all()
    assert (whole.timings["frame"] > 0).all() and (whole.timings["image_encoder"] == 0).all()
    assert np.isfinite(whole.fps) and whole.fps > 0
