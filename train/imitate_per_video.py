"""Per-video agents that imitate the oracle (the SAM2RL paper's setting: the agent is
optimised on the video it will track, with that video's ground truth).

    python train/imitate_per_video.py --suite drift --suite look-alike --suite long-occlusion \
        --suite occlusion --videos 8 --frames 48 --beam 8 --out runs/imitation

Per video: the beam-B oracle's decisions (`sam2rl_fast.rl.oracle`), the observations its
decisions lead to (replayed in the batched environment), a `SlotPolicy` fitted to them
(`sam2rl_fast.rl.imitation.behaviour_clone`) until its argmax takes every oracle decision,
saved as an agent file and exported to ONNX; then the agent tracks its video in
`FastTracker` (the .zip and the .onnx) beside the stock rule, SAMURAI, DAM4SAM and SAM2Long.
What is deployed is the policy network acting on its observations, not the list of actions.

Every video writes `OUT/<video>/result.json` last: a killed run resumes where it stopped
(`--out` the same folder). `OUT/table.md` and `OUT/summary.json` are written at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sam2rl_fast.data.synthetic import SUITES, generate_video, suite_seeds
from sam2rl_fast.eval.evaluation import evaluate_agents
from sam2rl_fast.eval.stats import paired_bootstrap
from sam2rl_fast.model.loading import build_model
from sam2rl_fast.rl.env import prepare_videos
from sam2rl_fast.rl.episodes import EpisodeBatch, Lane
from sam2rl_fast.rl.imitation import behaviour_clone, blank_agent, demonstrations
from sam2rl_fast.rl.oracle import oracle_search
from sam2rl_fast.rl.training import TrainConfig

RULES = ("sam2", "samurai", "dam4sam", "sam2long")


def save_agent_file(ppo, path: Path, model, cfg: TrainConfig, video: str, fit: dict, oracle) -> Path:
    from sam2rl_fast.rl.agents import write_agent_file

    return write_agent_file(ppo, path, capacity=cfg.capacity, model=model, training={
        "mode": "per-video", "method": f"behaviour cloning of the beam-{oracle.beam} oracle's decisions",
        "videos": [video], "timesteps": 0, "fit": fit, "seed": cfg.seed, "config": dataclasses.asdict(cfg)})


def run_video(suite: str, seed: int, args, model, out: Path, log) -> dict:
    from sam2rl_fast.export.agent import export_agent

    name = f"{suite}-{seed}"
    folder = out / name
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    v = generate_video(suite, seed, num_frames=args.frames, height=args.size, width=args.size)
    video = prepare_videos([(v.frames, v.masks, name)], model, progress=False)[0]
    oracle = oracle_search(video, model, beam=args.beam)
    t_oracle = time.perf_counter() - t0
    batch = EpisodeBatch([video], model, 1, obj=0)
    try:
        demos, replay = demonstrations(batch, [Lane(0, 0, 0)], oracle.actions[None])
    finally:
        batch.close()
    cfg = TrainConfig(mode="per-video", suites=[suite], split="heldout", num_videos=1, first_seed=seed,
                      num_frames=args.frames, size=args.size, fifo_prior=args.fifo_prior, seed=args.seed,
                      check_headroom=False, eval_videos=0)
    ppo = blank_agent(cfg.capacity, d_model=cfg.d_model, fifo_prior=cfg.fifo_prior, seed=cfg.seed)
    t1 = time.perf_counter()
    fit = behaviour_clone(ppo.policy, demos, steps=args.bc_steps, seed=args.seed)
    t_fit = time.perf_counter() - t1
    agent = save_agent_file(ppo, folder / f"{name}.zip", model, cfg, name, fit, oracle)
    onnx = export_agent(agent, folder / f"{name}.onnx", overwrite=True)
    scores = evaluate_agents([suite], [*RULES, str(agent), str(onnx)], model, seeds=[seed],
                             num_frames=args.frames, size=args.size, first_target_only=True,
                             progress=False, log=log)
    if len(scores) != len(RULES) + 2:
        raise RuntimeError(f"{name}: no target visible on frame 0")
    J = {k: s.J for k, s in zip([*RULES, "agent", "agent_onnx"], scores)}
    # the oracle's gain is over frames 2..L-1; J is over 1..L-1, whose frame 1 no decision changes
    scale = (args.frames - 2) / (args.frames - 1)
    row = {"video": name, "suite": suite, "seed": seed, **J,
           "oracle_gain": oracle.gain * scale, "oracle": J["sam2"] + oracle.gain * scale,
           "replay_gain": float(replay[0, 2:].mean() - oracle.stock) * scale,
           "oracle_actions": oracle.actions.tolist(), "beam": oracle.beam,
           "oracle_lane_steps": oracle.lane_steps, "oracle_s": round(t_oracle, 1), "fit_s": round(t_fit, 1),
           "fit": fit, "seconds": round(time.perf_counter() - t0, 1)}
    tmp = done.with_name("result.json.tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(done)
    return row


def table(rows: list[dict]) -> str:
    cols = [*RULES, "agent", "agent_onnx", "oracle"]
    lines = ["| suite | videos | " + " | ".join(f"{c} J" for c in cols) + " | agent − stock [95% CI] | "
             "agent − samurai | agent − dam4sam | agent − sam2long | share of oracle room |",
             "|---" * (len(cols) + 7) + "|"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == suite]
        c = {k: np.array([r[k] for r in rs]) for k in cols}
        room = (c["oracle"] - c["sam2"]).mean()
        share = (c["agent"] - c["sam2"]).mean() / room if room > 1e-9 else float("nan")
        diffs = [paired_bootstrap(c["agent"], c[k]) for k in RULES]
        lines.append(f"| {suite} | {len(rs)} | " + " | ".join(f"{c[k].mean():.3f}" for k in cols) + " | "
                     + " | ".join(str(d) for d in diffs) + f" | {share:.0%} |")
    lines += ["", "| video | " + " | ".join(cols) + " | bc steps | min margin |", "|---" * (len(cols) + 3) + "|"]
    lines += [f"| {r['video']} | " + " | ".join(f"{r[k]:.3f}" for k in cols)
              + f" | {r['fit']['steps']} | {r['fit']['min_margin']:+.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", required=True, choices=sorted(SUITES))
    ap.add_argument("--videos", type=int, default=8, help="held-out videos per suite")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--fifo-prior", type=float, default=3.0)
    ap.add_argument("--bc-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    for k in ("videos", "frames", "beam", "bc_steps"):
        if getattr(args, k) < (3 if k == "frames" else 1):
            ap.error(f"--{k.replace('_', '-')} is too small: {getattr(args, k)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = build_model(args.model, device="cpu")
    jobs = [(s, seed) for i in range(args.videos) for s in args.suite
            for seed in [suite_seeds(s, "heldout", count=args.videos)[i]]]
    rows = []
    for k, (suite, seed) in enumerate(jobs):
        r = run_video(suite, seed, args, model, out, log=lambda m: print(m, flush=True))
        rows.append(r)
        print(f"[{k + 1}/{len(jobs)}] {r['video']}: stock {r['sam2']:.3f} agent {r['agent']:.3f} "
              f"onnx {r['agent_onnx']:.3f} oracle {r['oracle']:.3f} (replay {r['replay_gain']:+.4f}) "
              f"samurai {r['samurai']:.3f} dam4sam {r['dam4sam']:.3f} sam2long {r['sam2long']:.3f} "
              f"[{r['seconds']:.0f} s]", flush=True)
    txt = table(rows)
    (out / "table.md").write_text(txt + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(txt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
