"""Export a trained memory-control agent to ONNX (thin wrapper over sam2rl_fast.export.agent).

    python export/export_agent.py runs/agent/agent.zip -o agent.onnx
    python export/export_agent.py runs/agent/agent.zip -o agent.onnx --opset 18 --overwrite

Same as `sam2rl-fast export AGENT.zip -o agent.onnx`; see docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys

from sam2rl_fast.export.agent import add_export_args, export_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_export_args(parser)
    return export_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
