"""The trainer's memory-path priors (train/demo_trainer/memory_path.py) and pointer dropout."""

import importlib.util
from pathlib import Path

import pytest
import torch
from demo_trainer import data as tdata
from demo_trainer import forward as tfwd
from demo_trainer import memory_path as mp
from demo_trainer import run as trun

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip():
    b = tdata.batch_at(tdata.ClipDataset(3, 6, 256, {"look-alike": 1.0}), 0, 1)
    return tfwd.to_model_input(b["frames"], "cpu"), b["masks"]


def test_locality_prior_attends_to_the_same_position(clip):
    model = trun.build_demo_model("cpu", seed=0).eval()
    before = mp.cross_attention_mass(model, *clip)
    assert mp.init_local_cross_attention(model, 2.0, 0.1) == len(model.memory_attention.layers)
    after = mp.cross_attention_mass(model, *clip)
    assert len(after) == len(before) == 5 * len(model.memory_attention.layers)
    for a in after:  # frames 1..5, every layer
        # the same position in each memory frame: many times a uniform share, pointers little
        assert a["same_position_mass"] > 20 * a["uniform"] and a["pointer_mass"] < 0.1, a
    assert max(b["same_position_mass"] / b["uniform"] for b in before) < 5


def test_mask_path_gain_scales_what_the_mask_adds_and_keeps_an_empty_mask(clip):
    model = trun.build_demo_model("cpu", seed=0).eval()
    ds = model.memory_encoder.mask_downsampler
    scale, bias = model.sigmoid_scale_for_mem_enc, model.sigmoid_bias_for_mem_enc
    mask = clip[1][:, 1, None].float() * scale + bias
    empty = torch.full_like(mask, bias)
    with torch.no_grad():
        m0, e0 = ds(mask), ds(empty)
        mp.amplify_mask_path(model, 50.0)
        m1, e1 = ds(mask), ds(empty)
    diff0, diff1 = m0 - e0, m1 - e1
    assert diff0.abs().max() > 0 and torch.allclose(diff1, 50 * diff0, rtol=1e-4, atol=1e-4)
    # an empty mask: the same mean output per channel (its border varies, from the padding)
    assert torch.allclose(e1.mean((0, 2, 3)), e0.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_pointer_dropout_tracks_on_spatial_memories_alone(clip):
    model = trun.build_demo_model("cpu", seed=0).eval()
    frames, masks = clip
    raw = lambda outs: torch.cat([torch.cat([o["ious"].flatten(), o["object_score_logits"].flatten()])  # noqa: E731
                                  for o in outs[2:]])
    with torch.no_grad():
        with_ptrs = raw(tfwd.forward_clips(model, frames, masks))
        without = raw(tfwd.forward_clips(model, frames, masks, pointers=False))
        model.obj_ptr_proj.layers[-1].bias.add_(1.0)  # what the pointers say: unread without them
        without2 = raw(tfwd.forward_clips(model, frames, masks, pointers=False))
        with_ptrs2 = raw(tfwd.forward_clips(model, frames, masks))
    assert torch.equal(without, without2) and not torch.allclose(with_ptrs, with_ptrs2)
    assert not torch.allclose(with_ptrs, without)


def test_run_options_are_part_of_the_run_and_parsed(tmp_path):
    cfg = trun.DemoTrainConfig(steps=1, batch=1, frames=3, eval_videos=0, device="cpu",
                           locality_init=[2.0, 0.1], mask_gain=10.0, pointer_dropout=1.0)
    logs = []
    trun.train(tmp_path / "r", cfg, log=logs.append)
    assert any("locality prior" in m for m in logs) and any("amplified x10.0" in m for m in logs)
    other = trun.DemoTrainConfig(**{**cfg.__dict__, "mask_gain": 20.0})
    with pytest.raises(trun.RunError, match="mask_gain"):
        trun.train(tmp_path / "r", other, resume=True, log=logs.append)
    batch = tdata.batch_at(tdata.ClipDataset(0, 3, 256), 0, 1)
    model = trun.build_demo_model("cpu", seed=0)
    out = trun.train_step(model, trun.make_optimizer(model, 1e-4, 0.0), batch, torch.device("cpu"),
                          0, cfg, amp=False)
    assert out["pointers"] is False
    spec = importlib.util.spec_from_file_location("tdm", ROOT / "train" / "train_demo_model.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    _, c, _ = cli.parse_args(["--run", "x", "--locality-init", "1.5", "--mask-gain", "100",
                              "--pointer-dropout", "0.3"])
    assert c.locality_init == [1.5, 0.1] and c.mask_gain == 100 and c.pointer_dropout == 0.3
    with pytest.raises(SystemExit):
        cli.parse_args(["--run", "x", "--locality-init", "a,b"])
