"""One agent across videos: imitation of the oracle, then rounds of policy iteration.

    python train/imitate_multi_video.py --config train/configs/sam2rl.toml --out runs/sam2rl

Stages, each resumable (every unit of work writes its file last, a killed run redoes at
most the unit it was in):

1. `oracle/<video>.json`: the beam-B oracle's decisions on every training video (seeds of
   the training split only) and the demonstrations their replay gives;
2. `round0/agent.zip`: a `SlotPolicy` (started at the stock rule, `fifo_prior`) cloned on
   all demonstrations;
3. `round<k>/`: the agent of round k-1 tracks every training video; at `branch_frames`
   sampled decisions of its own rollout every action is tried (held for `hold` frames) and
   the agent's continuation scored to the end (`branch_values`); the best action labels the state where it beats the
   agent's own by more than `tolerance` (`labels_from_values`). The agent is cloned again on
   the oracle's demonstrations and every round's labels (DAgger's aggregation);
4. `agent.zip` / `agent.onnx`: the last round's agent; `sam2rl-fast eval` compares it on
   held-out videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sam2rl_fast.data.synthetic import SUITES, generate_video, suite_seeds
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl.env import prepare_videos
from sam2rl_fast.rl.episodes import EpisodeBatch, Lane
from sam2rl_fast.rl.imitation import (
    Demonstrations,
    behaviour_clone,
    blank_agent,
    branch_values,
    demonstrations,
    labels_from_values,
    policy_actions,
)
from sam2rl_fast.rl.oracle import oracle_search


@dataclass
class ImitationConfig:
    suites: list[str] = field(default_factory=lambda: sorted(SUITES))
    videos: int = 4  # training videos per suite (training seeds only)
    frames: int = 48
    size: int = 256
    beam: int = 4  # 0: no oracle demonstrations, policy iteration from the stock rule only
    rounds: int = 2  # policy-iteration rounds after the first cloning
    branch_frames: int = 8  # sampled decisions per video and round
    hold: int = 1  # frames each tried action is held for (branch_values' option length)
    tolerance: float = 0.05  # summed-IoU lead an action needs over the agent's own
    fifo_prior: float = 3.0
    d_model: int = 64
    bc_steps: int = 4000
    lr: float = 1e-3
    capacity: int = 7
    seed: int = 0
    precision: str = "fp32"

    @classmethod
    def from_toml(cls, path) -> ImitationConfig:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: --config: {path} not found")
        d = tomllib.loads(path.read_text())
        known = {f.name: f for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k not in known:
                raise SystemExit(f"error: {path}: unknown setting {k!r}; known: {sorted(known)}")
            want = type(getattr(cls(), k))
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                if not (want is float and isinstance(v, int) and not isinstance(v, bool)):
                    raise SystemExit(f"error: {path}: {k} must be {want.__name__}, got {v!r}")
        cfg = cls(**d)
        bad = [s for s in cfg.suites if s not in SUITES]
        if bad:
            raise SystemExit(f"error: {path}: unknown suites {bad}; known: {sorted(SUITES)}")
        for k in ("videos", "branch_frames", "bc_steps", "hold"):
            if getattr(cfg, k) < 1:
                raise SystemExit(f"error: {path}: {k} must be >= 1, got {getattr(cfg, k)}")
        if cfg.beam < 0 or (cfg.beam == 0 and cfg.rounds == 0):
            raise SystemExit(f"error: {path}: beam must be >= 0, and rounds >= 1 without the oracle (beam 0)")
        if cfg.frames < 3 or cfg.rounds < 0:
            raise SystemExit(f"error: {path}: frames must be >= 3 and rounds >= 0")
        return cfg


def _write(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _demos(d: dict) -> Demonstrations:
    return Demonstrations(np.asarray(d["obs"], np.float32), np.asarray(d["allowed"], bool),
                          np.asarray(d["weight"], np.float32), [d["video"]] * len(d["obs"]))


def _save(ppo, path: Path, model, cfg: ImitationConfig, info: dict) -> Path:
    from sam2rl_fast.rl.agents import write_agent_file

    return write_agent_file(ppo, path, capacity=cfg.capacity, model=model, training={
        "mode": "multi-video", "method": "oracle imitation + policy iteration", "timesteps": 0,
        "config": dataclasses.asdict(cfg), **info})


def _fit(all_demos: list[Demonstrations], cfg: ImitationConfig, log):
    ppo = blank_agent(cfg.capacity, d_model=cfg.d_model, fifo_prior=cfg.fifo_prior, seed=cfg.seed)
    if not all_demos:  # no oracle stage: round 0 is the blank agent, the stock rule by its prior
        return ppo, {"steps": 0, "loss": None, "accuracy": 1.0, "min_margin": None}
    demos = Demonstrations.concat(all_demos)
    fit = behaviour_clone(ppo.policy, demos, steps=cfg.bc_steps, lr=cfg.lr, seed=cfg.seed, margin=1e9,
                          log=log, log_every=500)
    return ppo, fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    args = ap.parse_args(argv)
    cfg = ImitationConfig.from_toml(args.config)
    out = Path(args.out)
    saved = out / "config.json"
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(dataclasses.asdict(cfg))):
        raise SystemExit(f"error: --out {out} holds a run with other settings; use another folder")
    (out / "oracle").mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    model = build_model(args.model, device="cpu")
    log = lambda m: print(m, flush=True)  # noqa: E731
    jobs = [(s, seed) for s in cfg.suites for seed in suite_seeds(s, "train", count=cfg.videos)]
    videos = {}

    def video(suite, seed):
        if (suite, seed) not in videos:
            v = generate_video(suite, seed, num_frames=cfg.frames, height=cfg.size, width=cfg.size)
            videos[suite, seed] = prepare_videos([(v.frames, v.masks, v.name)], model, progress=False)[0]
        return videos[suite, seed]

    # 1. the oracle's demonstrations
    base = []
    t0 = time.perf_counter()
    for k, (suite, seed) in enumerate(jobs if cfg.beam else []):
        f = out / "oracle" / f"{suite}-{seed}.json"
        if not f.is_file():
            ev = video(suite, seed)
            if not ev.masks[0, 0].any():
                _write(f, {"skipped": True})
                continue
            r = oracle_search(ev, model, beam=cfg.beam, precision=cfg.precision)
            b = EpisodeBatch([ev], model, 1, obj=0, precision=cfg.precision)
            try:
                d, ious = demonstrations(b, [Lane(0, 0, 0)], r.actions[None])
            finally:
                b.close()
            _write(f, {"video": ev.name, "stock": r.stock, "oracle": r.oracle, "replay": float(ious[0, 2:].mean()),
                       "actions": r.actions.tolist(), "lane_steps": r.lane_steps, "seconds": r.seconds,
                       "obs": d.obs.tolist(), "allowed": d.allowed.tolist(), "weight": d.weight.tolist()})
            log(f"[oracle {k + 1}/{len(jobs)}] {ev.name}: stock {r.stock:.3f} oracle {r.oracle:.3f} "
                f"replay {float(ious[0, 2:].mean()):.3f} ({r.seconds:.0f} s)")
        d = json.loads(f.read_text())
        if not d.get("skipped"):
            base.append(_demos(d))
    labels: list[Demonstrations] = []
    ppo = None
    for rnd in range(cfg.rounds + 1):
        folder = out / f"round{rnd}"
        folder.mkdir(exist_ok=True)
        if rnd > 0:  # label the previous agent's own states
            act = policy_actions(ppo.policy)
            rng = np.random.default_rng([cfg.seed, rnd])
            for k, (suite, seed) in enumerate(jobs):
                f = folder / f"labels-{suite}-{seed}.json"
                if not f.is_file():
                    ev = video(suite, seed)
                    if not ev.masks[0, 0].any():
                        _write(f, {"skipped": True})
                        continue
                    frames = sorted(rng.choice(np.arange(1, cfg.frames - 1), cfg.branch_frames, replace=False).tolist())
                    t1 = time.perf_counter()
                    bv = branch_values(ev, model, act, frames, capacity=cfg.capacity, precision=cfg.precision,
                                       hold=cfg.hold)
                    seconds = time.perf_counter() - t1
                    allowed, w = labels_from_values(bv["obs"], bv["policy"], bv["q"], cfg.capacity,
                                                    tolerance=cfg.tolerance)
                    moved = int((~allowed[np.arange(len(frames)), bv["policy"]]).sum())
                    _write(f, {"video": ev.name, "frames": frames, "q": bv["q"].tolist(), "policy": bv["policy"].tolist(),
                               "obs": bv["obs"].tolist(), "allowed": allowed.tolist(), "weight": w.tolist(),
                               "seconds": round(seconds, 1), "lane_steps": len(frames) * (cfg.capacity + 1) * (cfg.frames - 2)})
                    log(f"[round {rnd} labels {k + 1}/{len(jobs)}] {ev.name}: {moved} of {len(frames)} "
                        f"decisions relabelled ({seconds:.0f} s)")
                d = json.loads(f.read_text())
                if not d.get("skipped"):
                    labels.append(_demos(d))
        agent = folder / "agent.zip"
        if agent.is_file():  # a round finished before a kill
            from sam2rl_fast.rl.agents import load_sb3

            ppo = load_sb3(agent)[0]
            continue
        ppo, fit = _fit(base + labels, cfg, log)
        _save(ppo, agent, model, cfg, {"round": rnd, "fit": fit, "seconds": round(time.perf_counter() - t0, 1),
                                       "videos": [f"{s}-{x}" for s, x in jobs]})
        log(f"round {rnd}: cloned on {sum(len(d) for d in base + labels)} labelled decisions, "
            f"accuracy {fit['accuracy']:.3f} ({(time.perf_counter() - t0) / 60:.1f} min)")
    from sam2rl_fast.export.agent import export_agent

    final = out / "agent.zip"
    final.write_bytes((out / f"round{cfg.rounds}" / "agent.zip").read_bytes())
    export_agent(final, out / "agent.onnx", overwrite=True)
    log(f"agent: {final} and {out / 'agent.onnx'} ({(time.perf_counter() - t0) / 60:.1f} min); compare it: "
        f"sam2rl-fast eval --videos 16 --frames {cfg.frames} --agent sam2 --agent samurai --agent dam4sam "
        f"--agent sam2long --agent {out / 'agent.onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
