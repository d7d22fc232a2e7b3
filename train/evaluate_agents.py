"""Evaluate trained agents against the stock rule and the heuristics (for docs/results.md).

    python train/evaluate_agents.py RUN_DIR --out OUT [--model CKPT]

RUN_DIR is a `sam2rl-fast train` folder. Per-video runs: every agent `<suite>-<seed>.zip`
tracks its own video; multi-video runs: `agent.zip` tracks the first `--videos` held-out
videos of every suite. Each video is also tracked with sam2, samurai and dam4sam (same
model, prompt and frames as in training). Writes `table.md`, `scores.json` and
`gains.png` (per-video J gain over the stock rule, agent vs best heuristic).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sam2rl_fast.cli import prepare_out_dir
from sam2rl_fast.data.synthetic import SUITES
from sam2rl_fast.evaluation import evaluate_agents, write_reports
from sam2rl_fast.model_loading import build_model

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--videos", type=int, default=8, help="held-out videos per suite (multi-video runs)")
    args = ap.parse_args(argv)
    cfg = json.loads((args.run / "config.json").read_text())
    model = build_model(args.model or cfg.get("model"), device="cpu")
    out = prepare_out_dir(args.out, args.overwrite)
    frames = cfg["num_frames"]
    scores = []
    if cfg["mode"] == "per-video":
        for agent in sorted(args.run.glob("*.zip")):
            suite, seed = agent.stem.rsplit("-", 1)
            scores += [s for s in evaluate_agents([suite], ["sam2", *HEURISTICS, str(agent)], model,
                                                  seeds=[int(seed)], num_frames=frames, first_target_only=True,
                                                  size=cfg["size"], log=print)]
    else:
        agent = args.run / "agent.zip"
        scores = evaluate_agents(list(SUITES), ["sam2", *HEURISTICS, str(agent)], model, num_videos=args.videos,
                                 num_frames=frames, first_target_only=True, size=cfg["size"], progress=True)
    write_reports(scores, out)
    by_video: dict[tuple[str, int], dict[str, float]] = {}
    for s in scores:
        name = "agent" if s.agent.endswith(".zip") else s.agent
        by_video.setdefault((s.suite, s.seed), {})[name] = s.J
    rows = [{"video": f"{su}-{se}", "suite": su, "stock": v["sam2"], "agent": v["agent"],
             "agent_gain": v["agent"] - v["sam2"],
             "best_heuristic_gain": max(v[h] - v["sam2"] for h in HEURISTICS)}
            for (su, se), v in by_video.items()]
    (out / "scores.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, out / "gains.png")
    lines = ["| suite | videos | stock J | samurai J | dam4sam J | agent J | agent gain | best heuristic gain | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == suite]
        js = {h: np.mean([by_video[(suite, int(r["video"].rsplit("-", 1)[1]))][h] for r in rs]) for h in HEURISTICS}
        ag = np.mean([r["agent_gain"] for r in rs])
        # the best heuristic on the suite (by mean gain), as the paper compares
        hb = max(np.mean([by_video[(suite, int(r["video"].rsplit("-", 1)[1]))][h] - r["stock"] for r in rs])
                 for h in HEURISTICS)
        ratio = f"{ag / hb:.1f}x" if hb > 1e-9 else ("n/a (heuristics gain nothing)" if ag <= 0 else "inf")
        lines.append(f"| {suite} | {len(rs)} | {np.mean([r['stock'] for r in rs]):.3f} | {js['samurai']:.3f} | "
                     f"{js['dam4sam']:.3f} | {np.mean([r['agent'] for r in rs]):.3f} | {ag:+.4f} | {hb:+.4f} | {ratio} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
