"""Training of the bundled demo model on the project's synthetic videos.

The model is the reduced SAM 2.1 of `sam2rl_fast/configs/demo_sam2.1_tiny256.yaml`, built
with `sam2rl_fast.model_loading.build_model` (sam2's own modules), trained the way SAM 2 is
trained on videos (sam2's `training/model/sam2.py` and `training/loss_fns.py`):

- a batch holds B clips of T frames (different videos in the batch dimension), one target
  object each; every frame of every clip goes through the image encoder at once;
- frame 0 is the conditioning frame, prompted with the ground-truth mask (SAM 2's
  `_use_mask_as_output` path, as the tracker does) or, for some batches, with the target's
  box (points labelled 2 and 3, through the SAM heads); frames 1..T-1 are tracked with
  `SAM2Base._track_step` on the memories of the previous frames (kept in `output_dict` with
  their gradients, as in SAM 2's training), with multimask output;
- losses as sam2's `MultiStepMultiMasksAndIous` with SAM 2.1's weights: focal (20) + dice (1)
  on the best of the candidate masks (min over candidates of 20 focal + dice), L1 between
  the predicted and the actual IoU of every candidate (1), binary cross-entropy of the
  object score against "target visible" (1); mask and IoU terms only on frames where the
  target is visible. Frames prompted with the ground-truth mask carry no loss.

Data: `ClipDataset` item i is a pure function of (seed, i) (a suite, a training seed, a target,
a flip), so a run is reproducible whatever the number of DataLoader workers.

The CLI is `train/train_demo_model.py`; the model card is `docs/demo-model.md`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sam2rl_fast.data.synthetic import SUITES, generate_video, suite_seeds
from sam2rl_fast.video import normalize

# Training mix: weighted towards the easy and the mixed suites.
SUITE_WEIGHTS = {"easy": 0.3, "occlusion": 0.15, "distractor": 0.15, "fast-motion": 0.1,
                 "mixed": 0.3}
# SAM 2.1's loss weights (sam2.1 training config).
LOSS_WEIGHTS = {"mask": 20.0, "dice": 1.0, "iou": 1.0, "class": 1.0}
CHECKPOINT_FORMAT = "sam2rl-fast-demo-v1"


def demo_config_path() -> str:
    from sam2rl_fast.demo_model import CONFIG

    return str(CONFIG)


# ---------------------------------------------------------------------------------- data
class ClipDataset(torch.utils.data.Dataset):
    """Item i: one training clip, a pure function of (seed, i).

    Returns a dict of numpy arrays: ``frames`` [T, S, S, 3] uint8, ``masks`` [T, S, S] bool
    (the visible part of the target), ``box`` [4] float32 (x0, y0, x1, y1 of the target on
    frame 0, in pixels), ``suite`` (index into `suites`).
    """

    def __init__(self, seed: int = 0, num_frames: int = 8, size: int = 256,
                 suite_weights: dict[str, float] | None = None, length: int = 10**9):
        self.seed, self.num_frames, self.size, self.length = int(seed), num_frames, size, length
        w = dict(suite_weights or SUITE_WEIGHTS)
        for s in w:
            if s not in SUITES:
                raise ValueError(f"unknown suite {s!r}; choose from {sorted(SUITES)}")
        self.suites = list(w)
        p = np.array([w[s] for s in self.suites], np.float64)
        self.p = p / p.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i), 0x5A2])
        for _ in range(100):  # a target visible on the prompt frame (nearly always the first)
            k = int(rng.choice(len(self.suites), p=self.p))
            suite = self.suites[k]
            seeds = suite_seeds(suite, "train")
            vseed = int(rng.integers(seeds.start, seeds.stop))
            video = generate_video(suite, vseed, num_frames=self.num_frames, height=self.size,
                                   width=self.size)
            visible = np.flatnonzero(video.masks[0].reshape(video.masks.shape[1], -1).any(1))
            if len(visible):
                break
        else:  # pragma: no cover - the generator always shows a target on frame 0
            raise RuntimeError("no synthetic clip with a visible target on frame 0")
        obj = int(rng.choice(visible))
        frames, masks = video.frames, video.masks[:, obj]
        if rng.random() < 0.5:  # horizontal flip
            frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
        ys, xs = np.nonzero(masks[0])
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        return {"frames": np.ascontiguousarray(frames), "masks": np.ascontiguousarray(masks),
                "box": box, "suite": k}


def make_loader(dataset: ClipDataset, batch: int, workers: int, start_step: int = 0):
    """Batches in order (batch j = items j*B .. j*B+B-1), from `workers` processes."""
    sampler = range(start_step * batch, len(dataset))
    kw = {}
    if workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler,
                                       num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       drop_last=True, **kw)


def to_model_input(frames: torch.Tensor, device) -> torch.Tensor:
    """uint8 [..., S, S, 3] -> normalised float32 [..., 3, S, S] on `device` (as
    `sam2rl_fast.video.preprocess_frame`, without the resize: clips are made at image size)."""
    return normalize(frames.to(device, non_blocking=True).movedim(-1, -3))


# ---------------------------------------------------------------------------------- model
def build_demo_model(device, config: str | None = None, seed: int | None = None):
    """The demo architecture with fresh random weights (a `SAM2VideoPredictor`), in train mode."""
    from sam2rl_fast.model_loading import build_model

    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(config or demo_config_path(), device=device)
    return model.train()


def count_parameters(model) -> int:
    return sum(v.numel() for v in model.state_dict().values())


def forward_clips(model, frames: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor | None = None):
    """SAM 2's training forward on a batch of clips.

    Args:
        frames: normalised [B, T, 3, S, S] (S = model.image_size).
        masks: [B, T, S, S] ground truth (bool or float).
        boxes: None to prompt frame 0 with the ground-truth mask, or [B, 4] boxes in pixels
            to prompt it with points labelled 2 and 3.

    Returns a list over frames of dicts with ``multimasks`` [B, M, S, S] logits, ``ious``
    [B, M], ``object_score_logits`` [B, 1] and ``supervised`` (False for a frame whose
    output is its mask prompt).
    """
    B, T = frames.shape[:2]
    S = model.image_size
    if frames.shape[-2:] != (S, S) or masks.shape[-2:] != (S, S):
        raise ValueError(f"clips must be {S}x{S} (the model's image size), got "
                         f"{tuple(frames.shape[-2:])}")
    # all frames through the image encoder at once, time-major: frame t is rows t*B..t*B+B-1
    img = frames.transpose(0, 1).reshape(T * B, *frames.shape[2:])
    backbone_out = model.forward_image(img)
    _, vis_feats, vis_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    for t in range(T):
        rows = slice(t * B, (t + 1) * B)
        feats = [x[:, rows] for x in vis_feats]
        pos = [x[:, rows] for x in vis_pos]
        point_inputs = mask_inputs = None
        if t == 0:
            if boxes is None:
                mask_inputs = masks[:, 0, None].float()
            else:
                point_inputs = {
                    "point_coords": boxes.float().view(B, 2, 2),
                    "point_labels": torch.tensor([[2, 3]], dtype=torch.int32,
                                                 device=boxes.device).expand(B, 2),
                }
        current_out, sam_outputs, _, _ = model._track_step(
            t, t == 0, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, T,
            False, None)
        multimasks_low, multimasks, ious, low, high, obj_ptr, score = sam_outputs
        current_out["pred_masks"] = low
        current_out["pred_masks_high_res"] = high
        current_out["obj_ptr"] = obj_ptr
        model._encode_memory_in_output(feats, feat_sizes, point_inputs, True, high, score,
                                       current_out)
        key = "cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"
        output_dict[key][t] = current_out
        outs.append({"multimasks": multimasks, "ious": ious, "object_score_logits": score,
                     "supervised": mask_inputs is None})
    return outs


# ---------------------------------------------------------------------------------- losses
def _focal(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """sam2's sigmoid focal loss, averaged over pixels: [B, M, H, W] -> [B, M]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def _dice(logits, targets):
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    num = 2 * (prob * targets).sum(-1)
    den = prob.sum(-1) + targets.sum(-1)
    return 1 - (num + 1) / (den + 1)


def frame_losses(multimasks, ious, score_logits, target) -> dict:
    """sam2's MultiStepMultiMasksAndIous terms for one frame, summed over the batch.

    multimasks [B, M, S, S] logits, ious [B, M], score_logits [B, 1], target [B, S, S]."""
    multimasks = multimasks.float()
    tgt = target.float()[:, None].expand_as(multimasks)
    focal = _focal(multimasks, tgt)
    dice = _dice(multimasks, tgt)
    with torch.no_grad():
        pred, gt = multimasks.flatten(2) > 0, tgt.flatten(2) > 0
        actual_iou = (pred & gt).sum(-1).float() / (pred | gt).sum(-1).float().clamp(min=1.0)
    iou_l1 = (ious.float() - actual_iou).abs()
    present = target.flatten(1).any(1).float()  # [B]
    best = torch.argmin(focal * LOSS_WEIGHTS["mask"] + dice * LOSS_WEIGHTS["dice"], dim=-1)
    rows = torch.arange(multimasks.shape[0], device=multimasks.device)
    cls = F.binary_cross_entropy_with_logits(score_logits.float().view(-1), present,
                                             reduction="none")
    return {"mask": (focal[rows, best] * present).sum(), "dice": (dice[rows, best] * present).sum(),
            "iou": (iou_l1.mean(-1) * present).sum(), "class": cls.sum()}


def clip_loss(outs, masks) -> tuple[torch.Tensor, dict]:
    """Weighted total over supervised frames, per clip and per frame (a mean, so that its
    scale does not depend on B or T); also the unweighted terms as floats."""
    terms = {k: 0.0 for k in LOSS_WEIGHTS}
    n = 0
    for t, o in enumerate(outs):
        if not o["supervised"]:
            continue
        fl = frame_losses(o["multimasks"], o["ious"], o["object_score_logits"], masks[:, t])
        for k in terms:
            terms[k] = terms[k] + fl[k]
        n += 1
    denom = max(n, 1) * masks.shape[0]
    terms = {k: v / denom for k, v in terms.items()}
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


# ---------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    out: str
    minutes: float | None = 4.5
    max_steps: int | None = None
    device: str | None = None
    batch: int = 16
    frames: int = 8
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    box_prob: float = 0.25
    workers: int | None = None
    eval_videos: int = 8
    eval_frames: int = 24
    log_every: int = 20
    overwrite: bool = False
    config: str | None = None
    init: str | None = None  # warm start from this checkpoint (a second training stage)
    suite_weights: dict | None = None  # training mix (default SUITE_WEIGHTS)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float,
              time_fraction: float | None = None) -> float:
    """Linear warm-up then cosine decay to `min_ratio` at `total` steps, or earlier when the
    spent share of a time budget (`time_fraction`) is ahead of the steps' progress."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if time_fraction is not None:
        p = min(1.0, max(p, time_fraction))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model, lr: float, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(("pos_embed", "pos_embed_window")) else decay).append(p)
    kw = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999), **kw)


def train_step(model, optimizer, batch, device, rng: np.random.Generator, box_prob: float,
               grad_clip: float, amp: bool) -> dict:
    """One optimisation step on a batch from `ClipDataset` (collated). Returns its losses."""
    frames = to_model_input(batch["frames"], device)
    masks = batch["masks"].to(device, non_blocking=True)
    boxes = batch["box"].to(device, non_blocking=True) if rng.random() < box_prob else None
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        outs = forward_clips(model, frames, masks, boxes)
    loss, terms = clip_loss(outs, masks)
    optimizer.zero_grad(set_to_none=True)
    skipped = not math.isfinite(float(loss.detach()))
    gnorm = float("nan")
    if not skipped:
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        skipped = not math.isfinite(gnorm)
        if not skipped:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **terms, "grad_norm": gnorm, "box": boxes is not None,
            "skipped": skipped}


def state_dict_for_shipping(model) -> dict:
    """float16 tensors (float32 where a value would not survive float16)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            h = v.to(torch.float16)
            v = h if torch.isfinite(h).all() and (v.abs().max() if v.numel() else 0) < 6e4 else v.float()
        out[k] = v.contiguous().clone()
    return out


def save_checkpoint(model, path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write `{"model": state_dict (float16), "meta": {...}}` atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    meta = {"format": CHECKPOINT_FORMAT, **(meta or {})}
    torch.save({"model": state_dict_for_shipping(model), "meta": json.loads(json.dumps(meta))}, tmp)
    os.replace(tmp, path)
    return path


def _write_json_atomic(obj, path: Path):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def output_paths(out) -> dict[str, Path]:
    out = Path(out)
    return {"checkpoint": out, "log": out.with_suffix(".json"), "plot": out.with_suffix(".png")}


def check_outputs_free(out, overwrite: bool):
    if overwrite:
        return
    taken = [str(p) for p in output_paths(out).values() if p.exists()]
    if taken:
        raise FileExistsError(f"{', '.join(taken)} already exist(s); pass --overwrite to replace")


def default_workers(device) -> int:
    n = os.cpu_count() or 1
    return 0 if device.type != "cuda" else max(0, min(14, n - 2))


def train(cfg: TrainConfig, log=print) -> dict:
    """Train, save the checkpoint and its JSON log, evaluate on held-out videos.

    Returns the log dict (also written next to the checkpoint)."""
    paths = output_paths(cfg.out)
    check_outputs_free(cfg.out, cfg.overwrite)
    if cfg.minutes is None and cfg.max_steps is None:
        raise ValueError("give a time budget (minutes) and/or max_steps")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: B x T frames at 256
        torch.cuda.reset_peak_memory_stats(device)
    np_rng = np.random.default_rng([cfg.seed, 0xB0C5])
    model = build_demo_model(device, cfg.config, seed=cfg.seed)
    if cfg.init:  # same loader as users' checkpoints: a config mismatch is refused there
        from sam2rl_fast.model_loading import ModelError, load_state_dict

        missing, unexpected = model.load_state_dict(load_state_dict(cfg.init), strict=False)
        if missing or unexpected:
            raise ModelError(f"--init {cfg.init} does not fit the demo config: "
                             f"{len(missing)} missing, {len(unexpected)} unexpected keys")
        log(f"warm start from {cfg.init}")
    n_params = count_parameters(model)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    data = ClipDataset(cfg.seed, cfg.frames, model.image_size, cfg.suite_weights)
    loader = make_loader(data, cfg.batch, workers)
    log(f"demo model: {n_params / 1e6:.2f}M parameters, image size {model.image_size}, "
        f"device {device} ({'bf16 autocast' if amp else 'fp32'}), batch {cfg.batch} clips x "
        f"{cfg.frames} frames, {workers} data workers")

    budget_s = None if cfg.minutes is None else cfg.minutes * 60.0
    # The schedule runs over a planned number of steps: max_steps, or (with a time budget)
    # an estimate from the measured speed, fixed once after the first steps.
    planned = cfg.max_steps
    plan_fixed = cfg.max_steps is not None and budget_s is None
    curve, t_data, t_step = [], 0.0, 0.0
    # Before the plan is fixed the cosine runs over a provisional horizon; warm-up (the
    # first warmup_steps) does not depend on it.
    step, t0 = 0, time.perf_counter()
    n_skipped, aborted, t_plan = 0, None, 0.0
    PLAN_FROM, PLAN_AT = 10, max(40, cfg.warmup_steps // 2)
    it = iter(loader)
    t_mark, step_mark = t0, 0
    while True:
        elapsed = time.perf_counter() - t0
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if budget_s is not None and elapsed >= budget_s:
            break
        if step == PLAN_FROM:
            t_plan = elapsed
        if not plan_fixed and step == PLAN_AT:
            # speed measured after start-up (first batches, CUDA/cuDNN warm-up)
            rate = (PLAN_AT - PLAN_FROM) / max(elapsed - t_plan, 1e-9)
            est = step + int(rate * max(budget_s - elapsed, 0.0))
            planned = est if cfg.max_steps is None else min(est, cfg.max_steps)
            planned = max(planned, step + 1)
            plan_fixed = True
            log(f"schedule: {planned} steps planned ({rate:.2f} steps/s, {budget_s:.0f} s budget)")
        total = planned if plan_fixed else max(cfg.warmup_steps * 10, step + 1)
        # with a time budget, the cosine also follows the clock: if the steps come slower
        # than planned (e.g. the data workers fall behind once their queue is drained), the
        # decay still ends with the budget
        f = lr_factor(step, total, cfg.warmup_steps, cfg.min_lr_ratio,
                      None if budget_s is None or not plan_fixed else elapsed / budget_s)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        ta = time.perf_counter()
        try:
            batch = next(it)
            tb = time.perf_counter()
            out = train_step(model, opt, batch, device, np_rng, cfg.box_prob, cfg.grad_clip, amp)
        except Exception as e:  # keep what was learnt: save it, then fail
            if step == 0:
                raise
            aborted = f"{type(e).__name__}: {e}"
            log(f"training stopped at step {step}: {aborted}; saving the weights so far")
            break
        step += 1
        if out["skipped"]:
            n_skipped += 1
            log(f"step {step}: non-finite loss or gradient ({out['loss']}, grad norm "
                f"{out['grad_norm']}): update skipped ({n_skipped} so far)")
            if n_skipped >= 20:
                aborted = "20 non-finite steps"
                break
        tc = time.perf_counter()
        t_data += tb - ta
        t_step += tc - tb
        out.update(step=step, time=round(tc - t0, 3), lr=cfg.lr * f)
        curve.append(out)
        if step % cfg.log_every == 0 or step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            sps = (step - step_mark) / max(now - t_mark, 1e-9)
            t_mark, step_mark = now, step
            recent = curve[-cfg.log_every:]
            mean = {k: np.nanmean([r[k] for r in recent]) for k in ("loss", "mask", "dice", "iou", "class")}
            log(f"step {step:5d}  {now - t0:6.1f}s  loss {mean['loss']:.4f} (focal {mean['mask']:.4f}"
                f" dice {mean['dice']:.3f} iou {mean['iou']:.3f} obj {mean['class']:.3f})  "
                f"lr {cfg.lr * f:.2e}  {sps:.2f} steps/s  {sps * cfg.batch:.1f} clips/s  "
                f"data wait {100 * t_data / max(t_data + t_step, 1e-9):.0f}%")
    train_s = time.perf_counter() - t0
    del it, loader
    model.eval()
    meta = {"config": Path(cfg.config or demo_config_path()).name, "steps": step,
            "batch": cfg.batch, "frames": cfg.frames, "seed": cfg.seed, "train_seconds": train_s,
            "parameters": n_params, "skipped_steps": n_skipped, "aborted": aborted, "device": torch.cuda.get_device_name(device)
            if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda" else None}
    save_checkpoint(model, paths["checkpoint"], meta, overwrite=cfg.overwrite)
    size = paths["checkpoint"].stat().st_size
    log(f"saved {paths['checkpoint']} ({size / 1e6:.2f} MB) after {step} steps in {train_s:.0f} s "
        f"({step / max(train_s, 1e-9):.2f} steps/s, {step * cfg.batch / max(train_s, 1e-9):.1f} clips/s)")
    result = {"train_config": asdict(cfg), "meta": meta, "checkpoint_bytes": size,
              "steps_per_s": step / max(train_s, 1e-9), "data_wait_fraction":
              t_data / max(t_data + t_step, 1e-9), "curve": curve}
    _write_json_atomic(result, paths["log"])
    if cfg.eval_videos > 0:
        try:
            ev = evaluate_heldout(paths["checkpoint"], device, cfg.eval_videos, cfg.eval_frames,
                                  config=cfg.config, log=log)
        except Exception as e:  # the checkpoint and its log are already safe
            import traceback

            result["heldout_error"] = traceback.format_exc()
            log(f"held-out evaluation failed: {type(e).__name__}: {e}\n{result['heldout_error']}")
        else:
            result["heldout"] = ev
            log(format_eval_table(ev))
        _write_json_atomic(result, paths["log"])
    plot_curve(curve, paths["plot"], log=log)
    if aborted:
        raise RuntimeError(f"training aborted ({aborted}); the checkpoint and log of the "
                           f"first {step} steps were saved")
    return result


# ---------------------------------------------------------------------------------- evaluation
def evaluate_heldout(model, device=None, videos: int = 8, frames: int = 24, size: int = 256,
                     suites=None, config: str | None = None, log=print) -> dict:
    """Mean J (and J&F) of `FastTracker(agent="sam2")` on the first `videos` held-out videos of
    each suite, the first target visible on frame 0 prompted with its mask there (frame 0 is
    not scored; a video with no visible target is skipped). `sam2rl_fast.evaluation` does
    the tracking and scoring.

    `model`: a checkpoint path or a sam2 model."""
    from sam2rl_fast.evaluation import evaluate_agents
    from sam2rl_fast.model_loading import build_model

    if not isinstance(model, torch.nn.Module):
        model = build_model(str(model), config=config, device=device)
    model = model.eval()
    t0 = time.perf_counter()
    suites = list(suites or SUITES)
    scores = evaluate_agents(suites, ["sam2"], model, num_videos=videos, num_frames=frames,
                             size=size, first_target_only=True, log=log)
    table = {}
    for suite in suites:
        mine = [s for s in scores if s.suite == suite]
        js, jfs = [s.J for s in mine], [s.JF for s in mine]
        table[suite] = {"J": float(np.mean(js)) if js else float("nan"),
                        "JF": float(np.mean(jfs)) if jfs else float("nan"), "videos": len(js),
                        "J_per_video": {f"{suite}-{s.seed}": float(s.J) for s in mine}}
    table["mean"] = {"J": float(np.mean([r["J"] for r in table.values()])),
                     "JF": float(np.mean([r["JF"] for r in table.values()])),
                     "videos": int(sum(r["videos"] for r in table.values()))}
    table["frames"] = frames
    table["seconds"] = time.perf_counter() - t0
    return table


def format_eval_table(ev: dict) -> str:
    rows = [f"held-out ({ev.get('frames', '?')} frames, prompt frame not scored)",
            f"{'suite':<12} {'videos':>6} {'J':>7} {'J&F':>7}"]
    for k, r in ev.items():
        if isinstance(r, dict):
            rows.append(f"{k:<12} {r['videos']:>6d} {r['J']:>7.3f} {r['JF']:>7.3f}")
    return "\n".join(rows)


def plot_curve(curve, path, log=print):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no loss-curve PNG")
        return None
    steps = [r["step"] for r in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ("loss", "mask", "dice", "iou", "class"):
        y = np.array([r[k] for r in curve]) * (LOSS_WEIGHTS.get(k, 1.0) if k != "loss" else 1.0)
        w = max(1, len(y) // 50)
        ys = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], ys, label=k if k == "loss" else f"{k} (weighted)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("demo model training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
