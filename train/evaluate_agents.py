"""Evaluate the agents of a `sam2rl-fast train` run against the stock rule and the heuristics.

    python train/evaluate_agents.py RUN_DIR --out OUT [--videos 8] [--model CKPT]

(`sam2rl-fast train` already does this at the end of a run, into RUN_DIR/eval.)
"""

import argparse
import json
import sys
from pathlib import Path

from sam2rl_fast.model.loading import build_model
from sam2rl_fast.outputs import prepare_out_dir
from sam2rl_fast.rl.agent_eval import evaluate_run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--videos", type=int, default=8, help="held-out videos per suite (multi-video runs)")
    ap.add_argument("--model", default=None, help="default: the run's model")
    args = ap.parse_args(argv)
    cfg = json.loads((args.run / "config.json").read_text())
    model = build_model(args.model or cfg.get("model"), device="cpu")
    print(evaluate_run(args.run, model, prepare_out_dir(args.out, args.overwrite, [args.run, args.model], "evaluate-agents"), videos=args.videos))
    return 0


if __name__ == "__main__":
    sys.exit(main())
