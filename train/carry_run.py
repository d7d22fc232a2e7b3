#!/usr/bin/env python
"""Pack a training run of the bundled model into files the device tool can return, or unpack one.

    python train/carry_run.py pack RUN DEST      # DEST: carry.json, model.pt, state.pt.partNN
    python train/carry_run.py unpack SRC RUN     # RUN: config.json, state.pt, model.pt, curve
    python train/train_demo_model.py --run RUN ... --resume     # continues it exactly

See docs/demo-model.md ("Training on a GPU").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

from demo_trainer.carry import CarryError, pack_run, unpack_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="RUN -> DEST (a new or empty folder)")
    a.add_argument("run", type=Path)
    a.add_argument("dest", type=Path)
    b = sub.add_parser("unpack", help="SRC -> RUN (a new or empty folder)")
    b.add_argument("src", type=Path)
    b.add_argument("run", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            for f in pack_run(args.run, args.dest):
                print(f)
        else:
            print(unpack_run(args.src, args.run))
    except CarryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
