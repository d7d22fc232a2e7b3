"""Train memory-control agents: `python train/train_agent.py --config train/configs/per_video.toml --out runs/pv`.

The same as `sam2rl-fast train` (see `sam2rl_fast/rl/training.py`); configs in train/configs/.
"""

import sys

from sam2rl_fast.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
