"""`sam2rl-fast` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from sam2rl_fast import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>20}: {v}")
    return 0 if info["extension_loaded"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam2rl-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="how the extension was built and whether a GPU is usable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
