"""An agent against every rule (and the oracle) on held-out videos it never saw.

    python train/evaluate_heldout.py [AGENT.onnx] --videos 16 --frames 48 [--oracle 8] --out OUT

Per suite and held-out seed: J of the stock rule, SAMURAI, DAM4SAM, SAM2Long and the agent
(first target, prompted with its mask on frame 0), and with `--oracle B` the beam-B
oracle's J (the room). Each score is computed once and kept in `OUT/videos/<video>.json`:
a killed run resumes where it stopped (the same `--out`), the rules are scored once for
every agent compared later (an agent is known by its file's hash), and the oracle, the
slow part (about a minute a video at beam 8 on 2 cores), once for all. `OUT/table.md` and
`OUT/summary.json` are written at the end: agent − each rule with paired bootstrap 95%
intervals, the share of the oracle's room taken.
"""

from __future__ import annotations

import argparse
import hashlib
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
from sam2rl_fast.rl.oracle import oracle_search

RULES = ("sam2", "samurai", "dam4sam", "sam2long")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _agent_key(agent: Path) -> str:
    """An agent's scores are kept under its name and content hash: a new file is scored anew."""
    return f"{agent.name}:{hashlib.sha256(agent.read_bytes()).hexdigest()[:16]}"


def score_video(suite: str, seed: int, agent: Path | None, args, model, folder: Path) -> dict | None:
    """The video's row: J of every rule, of `agent` and of the oracle, each computed once
    and kept in `folder/<video>.json` (the rules do not depend on the agent)."""
    f = folder / f"{suite}-{seed}.json"
    row = json.loads(f.read_text()) if f.is_file() else {"video": f"{suite}-{seed}", "suite": suite, "seed": seed}
    t0 = time.perf_counter()

    def score(agents) -> list | None:
        scores = evaluate_agents([suite], agents, model, seeds=[seed], num_frames=args.frames, size=args.size,
                                 first_target_only=True, progress=False, log=lambda m: None,
                                 precision=args.precision)
        return scores or None  # none: no target visible on frame 0

    if "rules" not in row:
        scores = score(list(RULES))
        row["rules"] = None if scores is None else {k: s.J for k, s in zip(RULES, scores)}
        _write_json(f, row)
    if row["rules"] is None:
        return None
    agents = row.setdefault("agents", {})
    if agent is not None and _agent_key(agent) not in agents:
        agents[_agent_key(agent)] = score([str(agent)])[0].J
        _write_json(f, row)
    if args.oracle and row.get("beam") != args.oracle:
        v = generate_video(suite, seed, num_frames=args.frames, height=args.size, width=args.size)
        video = prepare_videos([(v.frames, v.masks, row["video"])], model, progress=False)[0]
        r = oracle_search(video, model, beam=args.oracle, precision=args.precision)
        # the oracle's gain is over frames 2..L-1; J is over 1..L-1, whose frame 1 no decision changes
        scale = (args.frames - 2) / (args.frames - 1)
        row.update(beam=args.oracle, oracle=row["rules"]["sam2"] + r.gain * scale,
                   oracle_lane_steps=r.lane_steps, oracle_s=round(r.seconds, 1))
        _write_json(f, row)
    out = {"video": row["video"], "suite": suite, "seed": seed, **row["rules"],
           "seconds": round(time.perf_counter() - t0, 1)}
    if agent is not None:
        out["agent"] = agents[_agent_key(agent)]
    if "oracle" in row and row.get("beam") == args.oracle:
        out["oracle"] = row["oracle"]
    return out


def table(rows: list[dict], agent: str = "agent") -> str:
    """Per suite: mean J of each rule, the agent (and the oracle where scored); agent − each
    rule with its paired bootstrap 95% interval; the share of the oracle's room taken."""
    has_oracle = all("oracle" in r for r in rows)
    cols = [*RULES, agent, *(["oracle"] if has_oracle else [])]
    head = (["suite", "videos", *(f"{c} J" for c in cols), *(f"{agent} − {k} [95% CI]" for k in RULES)]
            + (["oracle room", "share taken"] if has_oracle else []))
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == suite]
        c = {k: np.array([r[k] for r in rs]) for k in cols}
        cells = [suite, str(len(rs)), *(f"{c[k].mean():.3f}" for k in cols),
                 *(str(paired_bootstrap(c[agent], c[k])) for k in RULES)]
        if has_oracle:
            room = float((c["oracle"] - c["sam2"]).mean())
            share = float((c[agent] - c["sam2"]).mean()) / room if room > 1e-9 else float("nan")
            cells += [f"{room:+.3f}", f"{share:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rules(rows: list[dict]) -> str:
    """Per suite: mean J of each rule (and the oracle where scored)."""
    cols = [*RULES, *(["oracle"] if all("oracle" in r for r in rows) else [])]
    lines = ["| suite | videos | " + " | ".join(f"{c} J" for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == suite]
        lines.append(f"| {suite} | {len(rs)} | " + " | ".join(f"{np.mean([r[c] for r in rs]):.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("agent", type=Path, nargs="?", help="agent file (.onnx or .zip); none: the rules only")
    ap.add_argument("--suite", action="append", choices=sorted(SUITES), help="repeatable (default: all)")
    ap.add_argument("--videos", type=int, default=16, help="held-out videos per suite")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--oracle", type=int, default=0, help="beam of the oracle (0: no oracle column)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    if args.agent is not None and not args.agent.is_file():
        ap.error(f"agent file not found: {args.agent}")
    if args.videos < 1 or args.frames < 3 or args.oracle < 0:
        ap.error("--videos must be >= 1, --frames >= 3 and --oracle >= 0")
    folder = args.out / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(args.model, device="cpu")
    suites = args.suite or sorted(SUITES)
    jobs = [(s, seed) for i in range(args.videos) for s in suites
            for seed in [suite_seeds(s, "heldout", count=args.videos)[i]]]
    rows = []
    for k, (suite, seed) in enumerate(jobs):
        r = score_video(suite, seed, args.agent, args, model, folder)
        if r is None:
            print(f"[{k + 1}/{len(jobs)}] {suite}-{seed}: no target on frame 0, skipped", flush=True)
            continue
        rows.append(r)
        print(f"[{k + 1}/{len(jobs)}] {r['video']}: " + " ".join(f"{c} {r[c]:.3f}" for c in [*RULES, "agent"] if c in r)
              + (f" oracle {r['oracle']:.3f}" if "oracle" in r else "") + f" [{r['seconds']:.0f} s]", flush=True)
    txt = table(rows) if args.agent is not None else table_rules(rows)
    (args.out / "table.md").write_text(txt + "\n")
    _write_json(args.out / "summary.json", {"agent": None if args.agent is None else str(args.agent),
                                            "frames": args.frames, "size": args.size, "rows": rows})
    print(txt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
