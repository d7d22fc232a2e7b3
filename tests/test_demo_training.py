"""The demo model: its config, its training code, its checkpoints (CPU, tiny settings)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2rl_fast import demo_model
from sam2rl_fast import demo_training as dt
from sam2rl_fast.data.synthetic import generate_video
from sam2rl_fast.model_loading import ModelError, build_model
from tests.helpers import build_random_predictor

ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMS = 7_000_000


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a 2-core machine shared with another job run 20-30x slower
    # (measured); one thread is steady. Restored after each test.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli():
    spec = importlib.util.spec_from_file_location("train_demo_model", ROOT / "train" / "train_demo_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_builds_a_small_sam21_with_the_project_interfaces():
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    assert Path(demo_model.CONFIG).is_file()
    m = build_model(demo_model.CONFIG, device="cpu")
    assert isinstance(m, SAM2VideoPredictor) and not m.training
    assert dt.count_parameters(m) <= MAX_PARAMS
    assert m.image_size == 256 and m.mem_dim == 64 and m.hidden_dim == 256
    assert m.memory_attention.d_model == 256
    assert m.num_maskmem == 7 and m.max_obj_ptrs_in_encoder == 16
    layer = m.memory_attention.layers[0]
    assert layer.cross_attn_image.k_proj.in_features == 64  # 64-d memories
    assert m.memory_encoder.out_proj.out_channels == 64
    # SAM 2.1 features
    assert m.no_obj_embed_spatial is not None and m.proj_tpos_enc_in_obj_ptrs
    assert m.pred_obj_scores and m.multimask_output_for_tracking
    assert m.use_mask_input_as_output_without_sam
    # the config is inferred back from the keys of its state dict
    from sam2rl_fast.model_loading import infer_config

    assert Path(infer_config(m.state_dict())).resolve() == Path(demo_model.CONFIG).resolve()


def test_clips_are_reproducible_and_show_their_target():
    ds = dt.ClipDataset(seed=3, num_frames=3, size=64)
    a, b, c = ds[5], ds[5], ds[6]
    assert a["frames"].shape == (3, 64, 64, 3) and a["masks"].shape == (3, 64, 64)
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["masks"], b["masks"])
    assert not np.array_equal(a["frames"], c["frames"])
    assert a["masks"][0].any()
    x0, y0, x1, y1 = a["box"]
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_training_steps_are_finite_and_change_the_weights():
    dev = torch.device("cpu")
    model = dt.build_demo_model(dev, seed=0)
    assert model.training
    opt = dt.make_optimizer(model, 1e-3, 0.05)
    ds = dt.ClipDataset(seed=0, num_frames=3, size=model.image_size)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    before = _params(model)
    rng = np.random.default_rng(0)
    for box_prob in (0.0, 1.0):  # mask prompt, then box prompt on frame 0
        out = dt.train_step(model, opt, batch, dev, rng, box_prob, 1.0, amp=False)
        assert out["box"] == (box_prob == 1.0) and not out["skipped"]
        assert all(np.isfinite(out[k]) for k in ("loss", "mask", "dice", "iou", "class", "grad_norm"))
    after = _params(model)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # gradients reach the memory path (memory encoder and memory attention)
    assert any(k.startswith("memory_encoder.") for k in changed)
    assert any(k.startswith("memory_attention.") for k in changed)


def test_bf16_autocast_step_runs():
    """The CUDA path trains under bf16 autocast; the CPU's autocast exercises the same
    mixed-dtype code (bf16 features and pointers, fp32 positions, memories and losses)."""
    dev = torch.device("cpu")
    model = dt.build_demo_model(dev, seed=1)
    opt = dt.make_optimizer(model, 1e-3, 0.05)
    ds = dt.ClipDataset(seed=1, num_frames=3, size=model.image_size)
    batch = torch.utils.data.default_collate([ds[2], ds[3]])
    for box_prob in (0.0, 1.0):
        out = dt.train_step(model, opt, batch, dev, np.random.default_rng(0), box_prob, 1.0, amp=True)
        assert np.isfinite(out["loss"]) and not out["skipped"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_losses_pick_the_best_candidate_and_skip_absent_targets():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True  # clip 1: target absent
    good = torch.where(target[0], 10.0, -10.0)
    multimasks = torch.stack([torch.stack([-good, good, torch.zeros(8, 8)])] * 2)  # [2, 3, 8, 8]
    ious = torch.tensor([[0.0, 1.0, 0.0]] * 2)
    scores = torch.tensor([[10.0], [-10.0]])
    fl = dt.frame_losses(multimasks, ious, scores, target)
    assert fl["mask"] < 1e-3 and fl["dice"] < 1e-3 and fl["iou"] < 1e-6 and fl["class"] < 1e-3


def test_trainer_checkpoint_loads_like_a_meta_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "demo.pt"
    cfg = dt.TrainConfig(out=str(out), minutes=None, max_steps=1, device="cpu", batch=1, frames=2,
                         workers=0, eval_videos=1, eval_frames=2, warmup_steps=2, log_every=1)
    logs = []
    result = dt.train(cfg, log=logs.append)
    assert out.is_file() and out.stat().st_size <= 14_000_000
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["meta"]["steps"] == 1 and len(log["curve"]) == 1
    assert set(log["heldout"]) >= {"easy", "occlusion", "distractor", "fast-motion", "mixed", "mean"}
    assert result["heldout"]["mean"]["videos"] == 5
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["meta"]["format"] == dt.CHECKPOINT_FORMAT
    assert {v.dtype for v in raw["model"].values() if v.is_floating_point()} == {torch.float16}

    a = build_model(str(out), config=demo_model.CONFIG, device="cpu")
    b = build_model(str(out), device="cpu")  # config inferred from the keys
    monkeypatch.setattr(demo_model, "CHECKPOINT", out)
    c = build_model(None, device="cpu")  # the bundled path
    for k, v in raw["model"].items():
        assert a.state_dict()[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype)
        ref = v.float() if v.is_floating_point() else v
        for m in (a, b, c):
            assert torch.equal(m.state_dict()[k], ref), k

    video = generate_video("easy", 1_000_000, num_frames=3, height=64, width=80)
    res = dt_tracker(video, str(out))
    assert res.masks.shape == (3, 1, 64, 80) and res.tracked.all()
    monkeypatch.setattr(demo_model, "CHECKPOINT", tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="no bundled demo model"):
        build_model(None, device="cpu")


def dt_tracker(video, model):
    from sam2rl_fast import FastTracker

    return FastTracker(video.frames, agent="sam2", model=model, prompt={0: video.masks[0, 0]},
                       device="cpu").run()


def test_checkpoints_of_other_configs_are_refused(tmp_path):
    meta = tmp_path / "sam21_tiny.pt"
    torch.save({"model": build_random_predictor("sam2.1", 256).state_dict()}, meta)
    with pytest.raises(ModelError, match="trained with configs/sam2.1/sam2.1_hiera_t.yaml"):
        build_model(str(meta), config=demo_model.CONFIG, device="cpu")
    # same trunk, one memory-attention layer fewer: named as not fitting the demo config
    yaml = Path(demo_model.CONFIG).read_text()
    assert "    num_layers: 2\n" in yaml
    other = tmp_path / "other.yaml"
    other.write_text(yaml.replace("    num_layers: 2\n", "    num_layers: 1\n"))
    ckpt = tmp_path / "other.pt"
    torch.save({"model": build_model(str(other), device="cpu").state_dict()}, ckpt)
    build_model(str(ckpt), config=str(other), device="cpu")  # loads with its own config
    with pytest.raises(ModelError, match="does not fit config"):
        build_model(str(ckpt), device="cpu")
    with pytest.raises(ModelError, match="does not fit config"):
        build_model(str(ckpt), config=demo_model.CONFIG, device="cpu")
    # a demo checkpoint is not a Meta tiny model either
    demo = tmp_path / "demo.pt"
    torch.save({"model": build_model(demo_model.CONFIG, device="cpu").state_dict()}, demo)
    with pytest.raises(ModelError, match="trained with .*demo_sam2.1_tiny256.yaml"):
        build_model(str(demo), config="sam2.1_hiera_t", device="cpu")


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    cli = _cli()
    out = tmp_path / "demo.pt"
    out.write_bytes(b"precious")
    assert cli.main(["--out", str(out), "--max-steps", "1", "--device", "cpu"]) == 2
    assert out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    out.unlink()
    out.with_suffix(".json").write_text("{}")  # the log counts too
    assert cli.main(["--out", str(out), "--max-steps", "1", "--device", "cpu"]) == 2
    assert not out.exists()
    with pytest.raises(FileExistsError):
        dt.save_checkpoint(torch.nn.Linear(1, 1), out.with_suffix(".json"))
    cfg = cli.parse_args(["--out", "x.pt", "--minutes", "4.5", "--device", "cuda", "--batch", "16",
                          "--seed", "0", "--max-steps", "10", "--eval-videos", "8"])
    assert (cfg.minutes, cfg.max_steps, cfg.device, cfg.batch, cfg.eval_videos) == (4.5, 10, "cuda", 16, 8)


def test_lr_schedule_warms_up_and_decays():
    f = [dt.lr_factor(s, 100, 10, 0.02) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] < 0.05
    # behind schedule on a time budget: the clock decides
    assert dt.lr_factor(20, 100, 10, 0.02, time_fraction=1.0) == pytest.approx(0.02)
    assert dt.lr_factor(20, 100, 10, 0.02, time_fraction=0.0) == pytest.approx(f[20])


def test_bundled_demo_model_loads_and_tracks():
    """The shipped checkpoint loads through the Meta-checkpoint path and follows an easy target."""
    import sam2rl_fast.demo_model as dm
    from sam2rl_fast import FastTracker
    from sam2rl_fast.data.synthetic import generate_video, suite_seeds
    from sam2rl_fast.metrics import evaluate_video
    from sam2rl_fast.model_loading import build_model

    if not dm.CHECKPOINT.is_file():
        pytest.fail(f"the bundled demo model {dm.CHECKPOINT} is missing from the package")
    model = build_model(None, device="cpu")
    assert model.image_size == 256
    video = generate_video("easy", suite_seeds("easy", "heldout")[1], num_frames=8, height=256, width=256)
    res = FastTracker(video.frames, model=model, prompt={0: video.masks[0, 0]}).run()
    # Random weights give J ~0 here; the shipped model's measured J on this video is 0.65.
    assert evaluate_video(res.masks, video.masks[:, :1])["J"] > 0.5
