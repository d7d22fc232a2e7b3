"""Trained agents against the stock rule and the heuristics, on the videos that matter.

Per-video runs (the paper's protocol): every agent `<suite>-<seed>.zip` tracks its own
video; multi-video runs: `agent.zip` tracks the first `videos` held-out videos of every
suite of its config. Each video is also tracked with sam2, samurai and dam4sam (same
model, prompt and frames as in training). `sam2rl-fast train` runs this at the end of a
run; `train/evaluate_agents.py` on an existing run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sam2rl_fast.eval.evaluation import evaluate_agents, write_reports
from sam2rl_fast.eval.stats import gain_target, paired_bootstrap

HEURISTICS = ("samurai", "dam4sam")


def _plot(rows, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["video"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 3.5))
    ax.bar(x - 0.2, [r["agent_gain"] for r in rows], 0.4, label="agent")
    ax.bar(x + 0.2, [r["best_heuristic_gain"] for r in rows], 0.4, label="best heuristic")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, names, rotation=70, fontsize=7)
    ax.set(ylabel="J gain over the stock rule")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def evaluate_run(run: Path, model, out: Path, *, videos: int = 8, progress: bool = True,
                 log=print) -> str:
    """Evaluate the agents of run folder `run` into `out` (reports, `scores.json`,
    `gains.png`, `table.md`); returns the markdown table of J and gains per suite."""
    run, out = Path(run), Path(out)
    cfg = json.loads((run / "config.json").read_text())
    frames, size = cfg["num_frames"], cfg["size"]
    scores = []
    if cfg["mode"] == "per-video":
        for agent in sorted(run.glob("*.zip")):
            suite, seed = agent.stem.rsplit("-", 1)
            scores += evaluate_agents([suite], ["sam2", *HEURISTICS, str(agent)], model, seeds=[int(seed)],
                                      num_frames=frames, size=size, first_target_only=True, log=log)
    else:
        scores = evaluate_agents(cfg["suites"], ["sam2", *HEURISTICS, str(run / "agent.zip")], model,
                                 num_videos=videos, num_frames=frames, size=size, first_target_only=True,
                                 progress=progress, log=log)
    return write_run_report(scores, out)


def write_run_report(scores, out: Path) -> str:
    """The reports of a run's scores (`write_reports`, scores.json, gains.png, table.md);
    returns the markdown table (also `rl.ray`'s, whose tasks return the scores).

    Per suite: mean J of every policy, the agents' gain with its spread over videos, the
    SAM2RL bar (`stats.gain_target`: 3x the best heuristic's relative gain, or >= 0.015 J
    where the heuristics gain < 0.005 J) and paired bootstrap 95% intervals of the agents'
    difference to the stock rule and to each heuristic; then every video."""
    write_reports(scores, out)
    by_video: dict[tuple[str, int], dict[str, float]] = {}
    for s in scores:
        by_video.setdefault((s.suite, s.seed), {})["agent" if s.agent.endswith(".zip") else s.agent] = s.J
    rows = [{"video": f"{su}-{se}", "suite": su, "seed": se, "stock": v["sam2"], "agent": v["agent"],
             **{h: v[h] for h in HEURISTICS}, "agent_gain": v["agent"] - v["sam2"],
             "best_heuristic_gain": max(v[h] - v["sam2"] for h in HEURISTICS)}
            for (su, se), v in by_video.items()]
    (out / "scores.json").write_text(json.dumps(rows, indent=2))
    if rows:
        _plot(rows, out / "gains.png")
    lines = ["| suite | videos | stock J | samurai J | dam4sam J | agent J | agent gain, mean ± sd "
             "[min, max] | agent rel. gain | best heuristic rel. gain | bar | met | agent - stock, 95% CI | "
             "agent - samurai, 95% CI | agent - dam4sam, 95% CI |", "|---" * 14 + "|"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == suite]
        col = {k: np.array([r[k] for r in rs]) for k in ("stock", "agent", *HEURISTICS)}
        t = gain_target(col["agent"], col["stock"], {h: col[h] for h in HEURISTICS})
        g = col["agent"] - col["stock"]
        ci = [paired_bootstrap(col["agent"], col[k]) for k in ("stock", *HEURISTICS)]
        lines.append(
            f"| {suite} | {len(rs)} | {col['stock'].mean():.3f} | {col['samurai'].mean():.3f} | "
            f"{col['dam4sam'].mean():.3f} | {col['agent'].mean():.3f} | {g.mean():+.4f} ± {g.std():.4f} "
            f"[{g.min():+.4f}, {g.max():+.4f}] | {t['agent_relative_gain']:+.1%} | "
            f"{t['best_heuristic_relative_gain']:+.1%} ({t['best_heuristic']}) | {t['target']} | "
            f"{'yes' if t['met'] else 'no'} | " + " | ".join(str(c) for c in ci) + " |")
    lines += ["", "| video | stock J | samurai J | dam4sam J | agent J | agent gain | best heuristic gain |",
              "|---" * 7 + "|"]
    lines += [f"| {r['video']} | {r['stock']:.3f} | {r['samurai']:.3f} | {r['dam4sam']:.3f} | {r['agent']:.3f} | "
              f"{r['agent_gain']:+.4f} | {r['best_heuristic_gain']:+.4f} |" for r in rows]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table
