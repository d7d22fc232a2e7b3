"""PPO training of memory-control agents on the batched environment.

Two modes, as the SAM2RL paper frames them:

- ``per-video``: one agent per video, trained on that video's episodes (the paper's
  setting: test-time optimisation with the video's ground truth), one file per video;
- ``multi-video``: one agent over many training videos, evaluated on held-out ones.

Every run writes into its own folder: the agent file(s) (with their metadata), periodic
checkpoints, TensorBoard logs, a CSV of finished episodes and a training-curve PNG.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from sam2rl_fast.data.synthetic import generate_video, suite_seeds
from sam2rl_fast.rl.resume import load_run_state, restore_run_state, run_state, state_path
from sam2rl_fast.rl.training_log import Progress, plot_curves
from sam2rl_fast.run_folder import check_resume

MODES = ("per-video", "multi-video")
# settings that do not change what a run computes: free to differ on --resume
RESUME_FREE = ("device", "eval_videos", "check_headroom")
# the `sam2rl-fast train` option of a setting, named in its error
_FLAGS = {"num_videos": "videos", "total_steps": "total-steps", "num_envs": "num-envs", "seed": "seed",
          "suites": "suite", "split": "split", "mode": "mode", "model": "model"}


@dataclass
class TrainConfig:
    mode: str = "multi-video"
    suites: list[str] = field(default_factory=lambda: ["occlusion", "distractor"])
    split: str = "train"  # where the videos come from (per-video agents: usually "heldout")
    num_videos: int = 8  # per suite
    first_seed: int | None = None  # default: the split's first seed
    num_frames: int = 24
    size: int = 256
    model: str | None = None  # None: the bundled demo model
    num_envs: int = 16
    total_steps: int = 20_000  # environment steps per agent
    episode_length: int | None = None  # None: whole videos
    random_window: bool = False
    reward: str = "improvement"
    capacity: int = 7
    seed: int = 0
    # PPO
    n_steps: int = 66  # per env and rollout (a multiple of the episode's 22 decisions)
    batch_size: int = 264
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.9
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    clip_range: float = 0.2
    d_model: int = 64
    fifo_prior: float = 0.0  # nats on the stock rule's action (policies/policy_net.py); 0: none
    checkpoint_every: int = 5_000  # environment steps
    eval_videos: int = 8  # after training: held-out videos per suite (multi-video); 0 = no evaluation
    check_headroom: bool = True  # first measure whether memory decisions change the masks at all
    device: str | None = None  # the SAM 2 model's (default: cuda if available); PPO runs on the CPU
    # a user's dataset folder instead of the suites (`sam2rl_fast.data.datasets`)
    dataset: str | None = None
    dataset_split: str | None = None  # a split file's name, e.g. "val"; None: every video
    sequences: list[str] | None = None  # videos of the split to keep

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.suites, str):
            self.suites = [self.suites]
        self.validate()

    def validate(self) -> None:
        """Every setting's type and range, so that a bad one fails here, before a run folder
        or a model exists (not deep in SB3 after the headroom step)."""
        def bad(name, want, v=None):
            flag = _FLAGS.get(name)
            where = f"{name} (--{flag})" if flag else name
            got = getattr(self, name) if v is None else v
            raise ValueError(f"setting {where} must be {want}, got {got!r}")

        def integer(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def real(v):
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("num_videos", "num_frames", "size", "num_envs", "total_steps", "capacity",
                     "n_steps", "n_epochs", "d_model"):
            if not integer(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "a positive integer")
        for name in ("checkpoint_every", "eval_videos", "seed"):
            if not integer(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "an integer >= 0")
        if not integer(self.batch_size) or self.batch_size < 2:
            bad("batch_size", "an integer >= 2")
        if self.num_frames < 3:
            bad("num_frames", "at least 3 (a prompt frame and two decisions)")
        if self.first_seed is not None and (not integer(self.first_seed) or self.first_seed < 0):
            bad("first_seed", "an integer >= 0 or absent")
        if self.episode_length is not None and (not integer(self.episode_length) or self.episode_length < 3):
            bad("episode_length", "an integer >= 3 or absent")
        for name, lo, hi in (("learning_rate", 0, None), ("clip_range", 0, None), ("gamma", 0, 1),
                             ("gae_lambda", 0, 1)):
            v = getattr(self, name)
            if not real(v) or v <= lo or (hi is not None and v > hi):
                bad(name, f"a number in ({lo}, {hi}]" if hi is not None else f"a number > {lo}")
        for name in ("ent_coef", "fifo_prior"):
            if not real(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "a finite number >= 0")
        for name in ("random_window", "check_headroom"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "true or false")
        from sam2rl_fast.rl.episodes import REWARDS

        if self.reward not in REWARDS:
            bad("reward", f"one of {list(REWARDS)}")
        if self.split not in ("heldout", "train"):
            bad("split", "heldout or train")
        for name in ("model", "device", "dataset", "dataset_split"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                bad(name, "a string or absent")
        if not isinstance(self.suites, (list, tuple)) or not self.suites \
                or not all(isinstance(x, str) for x in self.suites):
            bad("suites", "a non-empty list of suite names")
        if self.dataset is None:
            from sam2rl_fast.data.synthetic import SUITES

            unknown = [x for x in self.suites if x not in SUITES]
            if unknown:
                bad("suites", f"names from {sorted(SUITES)} (unknown: {unknown})")
        if self.sequences is not None and (not isinstance(self.sequences, (list, tuple))
                                           or not all(isinstance(x, str) for x in self.sequences)):
            bad("sequences", "a list of video names or absent")

    @classmethod
    def from_toml(cls, path, **overrides) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        d = tomllib.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
        d.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def seeds(self, suite: str) -> list[int]:
        rng = suite_seeds(suite, self.split)
        first = rng.start if self.first_seed is None else self.first_seed
        if not rng.start <= first < rng.stop:
            raise ValueError(f"first_seed {first} is outside the {self.split} seeds {rng}")
        return list(range(first, min(rng.stop, first + self.num_videos)))


def suite_items(cfg: TrainConfig, suites=None, split=None, count=None):
    """(frames, masks, name) of the config's videos (first target visible on frame 0 kept first):
    its dataset's (whole videos, or `episode_length`-frame windows) or its suites'."""
    if cfg.dataset is not None and suites is None and split is None:
        from sam2rl_fast.data.datasets import open_dataset, training_items

        ds = open_dataset(cfg.dataset, split=cfg.dataset_split, sequences=cfg.sequences)
        return training_items(ds)
    items = []
    for suite in suites or cfg.suites:
        seeds = cfg.seeds(suite) if split is None else list(suite_seeds(suite, split, count=count))
        for seed in seeds:
            v = generate_video(suite, seed, num_frames=cfg.num_frames, height=cfg.size, width=cfg.size)
            items.append((v.frames, v.masks, f"{suite}-{seed}"))
    return items


def save_agent(ppo, path, cfg: TrainConfig, model, videos: list[str], seconds: float) -> Path:
    """Write an agent file: SB3's zip + our metadata (layout, model signature, training)."""
    from sam2rl_fast.rl.agents import write_agent_file

    return write_agent_file(ppo, path, capacity=cfg.capacity, model=model, training={
        "mode": cfg.mode, "videos": videos, "timesteps": int(ppo.num_timesteps), "seconds": round(seconds, 1),
        "reward": cfg.reward, "seed": cfg.seed, "config": dataclasses.asdict(cfg)})


def train_agent(cfg: TrainConfig, items, model, out: Path, *, name: str = "agent", resume=None,
                cache=None, progress: bool = True, log=print, make_env=None) -> Path:
    """Train one PPO agent on `items` (video, gt[, name]); returns `out / f"{name}.zip"`.
    `make_env`: the VecEnv class (default `MemoryControlVecEnv`; `rl.ray.vecenv.RayVecEnv`)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from sam2rl_fast.rl.agents import load_sb3
    from sam2rl_fast.rl.env import MemoryControlVecEnv
    from sam2rl_fast.policies.policy_net import SlotPolicy

    torch.manual_seed(cfg.seed)
    venv = (make_env or MemoryControlVecEnv)(items, cfg.num_envs, model, episode_length=cfg.episode_length,
                               random_window=cfg.random_window, reward=cfg.reward,
                               capacity=cfg.capacity, cache=cache, progress=progress, seed=cfg.seed)
    env = VecMonitor(venv)
    names = [it[2] if len(it) > 2 else f"video{i}" for i, it in enumerate(items)]
    pending_log = None
    if resume is not None:
        ppo, _ = load_sb3(resume)
        ppo.set_env(env)
        # TensorBoard writes into this run's folder, wherever the run was first started
        ppo.tensorboard_log = str(out / "tensorboard")
        state_file = state_path(Path(resume))
        if state_file.is_file():
            pending_log = restore_run_state(ppo, venv, load_run_state(state_file))
        else:
            log(f"{state_file} is missing: the resume starts new episodes (not bit-exact)")
        log(f"resuming {resume} at {ppo.num_timesteps} steps")
    else:
        ppo = PPO(SlotPolicy, env, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                  learning_rate=cfg.learning_rate, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                  ent_coef=cfg.ent_coef, clip_range=cfg.clip_range, seed=cfg.seed, device="cpu",
                  policy_kwargs=dict(capacity=cfg.capacity, d_model=cfg.d_model, fifo_prior=cfg.fifo_prior),
                  tensorboard_log=str(out / "tensorboard"), verbose=0)
    t0 = time.perf_counter()

    def save(path, with_state: bool = False):
        agent = save_agent(ppo, path, cfg, model, names, time.perf_counter() - t0)
        state = run_state(ppo, venv) if with_state else None
        if state is not None:  # written after the zip: a zip without it resumes inexactly
            tmp = state_path(agent).with_name(state_path(agent).name + ".tmp")
            torch.save(state, tmp)
            tmp.replace(state_path(agent))
        return agent

    cb = Progress(cfg.total_steps, out / f"{name}-episodes.csv", out / "checkpoints" / name,
                   cfg.checkpoint_every, save, f"training {name}", progress, pending_log)
    remaining = max(cfg.total_steps - ppo.num_timesteps, 0)
    try:
        ppo.learn(remaining, callback=cb, tb_log_name=name, reset_num_timesteps=resume is None)
    finally:
        env.close()
    return save(out / f"{name}.zip")


def check_headroom(items, model, cache, samples: int = 8, log=print) -> list:
    """Measure, before training, whether memory decisions change the model's masks on
    these videos (`sam2rl_fast.rl.headroom`); warn when they cannot: agents would learn nothing."""
    from sam2rl_fast.rl.env import prepare_videos
    from sam2rl_fast.rl.headroom import memory_headroom

    rows = memory_headroom(prepare_videos(items, model, cache=cache), model, samples=samples, progress=False)
    best = max(r.random_best for r in rows)
    px = max(r.max_pixels for r in rows)
    log(f"headroom: over {len(rows)} video(s), the best of {samples} random decision sequences gains "
        f"{best:+.4f} mean IoU over the stock rule; decisions change at most {px} pixels of a frame")
    if best < 1e-3:
        log("WARNING: memory decisions hardly change this model's masks on these videos, so no agent "
            "can gain much over the stock rule (docs/results.md); training anyway")
    return rows


def check_resume_config(cfg: TrainConfig, out: Path):
    """Refuse to resume a run with other settings than it was started with
    (`run_folder.RunError`, a ValueError)."""
    check_resume(out, dataclasses.asdict(cfg), free=RESUME_FREE)


def latest_checkpoint(out: Path, name: str) -> Path | None:
    """The newest complete checkpoint of agent `name` (a kill can leave a .tmp.zip, or a zip
    whose run state was not written yet: then the one before it, which resumes exactly)."""
    ckpts = sorted(p for p in (out / "checkpoints" / name).glob("step*.zip") if ".tmp" not in p.name)
    ckpts = [p for p in ckpts if state_path(p).is_file()] or ckpts
    return ckpts[-1] if ckpts else None


def start_run(cfg: TrainConfig, out, resume: bool = False) -> Path:
    """The run folder `out` with the config's config.json; a resume is checked against the
    run's settings first, before anything is touched."""
    out = Path(out)
    check_resume_config(cfg, out) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    if not resume or not (out / "config.json").is_file():
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return out


def run_training(cfg: TrainConfig, out, *, resume: bool = False, progress: bool = True,
                 log=print) -> list[Path]:
    """Train the config's agent(s) in this process into folder `out`; returns the agent
    files. The same run on Ray: `rl.ray.fleet.run_fleet`."""
    from sam2rl_fast.model.loading import build_model
    from sam2rl_fast.rl.features import FeatureCache

    out = start_run(cfg, out, resume)

    model = build_model(cfg.model, device=cfg.device)
    items = suite_items(cfg)
    cache = FeatureCache(model, progress=progress)  # one image-encoder pass per video, for everything
    if cfg.check_headroom and not resume:
        check_headroom(items, model, cache, log=log)
    jobs = [(it[2], [it]) for it in items] if cfg.mode == "per-video" else [("agent", items)]
    agents = []
    for name, its in jobs:
        final = out / f"{name}.zip"
        if resume and final.is_file():
            log(f"{final} exists: done")
            agents.append(final)
            continue
        agents.append(train_agent(cfg, its, model, out, name=name, cache=cache, progress=progress, log=log,
                                  resume=latest_checkpoint(out, name) if resume else None))
    plot_curves(sorted(out.glob("*-episodes.csv")), out / "training-curve.png")
    if cfg.dataset is not None:
        log(f"compare the agents with the stock rule and the heuristics on the dataset: "
            f"sam2rl-fast eval --dataset {cfg.dataset} --agent sam2 --agent <agent.zip> ...")
    elif cfg.eval_videos > 0:
        import shutil

        from sam2rl_fast.rl.agent_eval import evaluate_run

        shutil.rmtree(out / "eval", ignore_errors=True)  # this run's own output, made again
        log(evaluate_run(out, model, out / "eval", videos=cfg.eval_videos, progress=progress, log=log))
    return agents
