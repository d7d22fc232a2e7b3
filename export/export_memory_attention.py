"""Export SAM 2's memory attention to ONNX (thin wrapper over sam2rl_fast.export.memory_attention).

    python export/export_memory_attention.py --model sam2.1_hiera_large.pt -o ma_large.onnx
    python export/export_memory_attention.py --model sam2.1_hiera_t --image-size 512 -o ma.onnx
"""

from __future__ import annotations

import argparse
import sys

from sam2rl_fast.export.memory_attention import (
    add_export_memory_attention_args,
    export_memory_attention_cli,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_export_memory_attention_args(parser)
    return export_memory_attention_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
