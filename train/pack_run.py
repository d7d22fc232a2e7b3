#!/usr/bin/env python
"""Pack a training run of the bundled model into an archive folder, or unpack one.

    python train/pack_run.py pack RUN -o ARCHIVE_DIR [--part-size 50M]
    python train/pack_run.py unpack ARCHIVE_DIR -o RUN
    python train/train_demo_model.py --run RUN ... --resume     # continues it exactly

ARCHIVE_DIR holds run-pack.json (the run's config, every file's size and SHA-256), state.pt
and model.pt, each cut into parts of at most --part-size (state.pt.part00, ...) where it is
larger; unpacking checks every byte and rebuilds RUN (config.json, state.pt, model.pt, the
curve). Both refuse to write into a folder that is not empty. See docs/demo-model.md
("Training on a GPU").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]

from demo_trainer.packing import PackError, pack_run, parse_size, unpack_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="run folder RUN -> archive folder (new or empty)")
    a.add_argument("run", type=Path, metavar="RUN")
    a.add_argument("-o", "--output", type=Path, required=True, metavar="ARCHIVE_DIR")
    a.add_argument("--part-size", metavar="SIZE",
                   help="cut files larger than SIZE into parts of at most SIZE (50M, 512K, bytes; "
                        "K, M, G are powers of 1024); default: files whole")
    b = sub.add_parser("unpack", help="archive folder -> run folder RUN (new or empty)")
    b.add_argument("archive", type=Path, metavar="ARCHIVE_DIR")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="RUN")
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            size = None if args.part_size is None else parse_size(args.part_size)
            for f in pack_run(args.run, args.output, part_size=size):
                print(f)
        else:
            print(unpack_run(args.archive, args.output))
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
