"""The small SAM 2.1 model this project trains on its synthetic videos and ships as package data.

It is what `FastTracker(model=None)` and `sam2rl-fast demo` run when no Meta checkpoint is
at hand (none can be downloaded on an offline machine). Names and paths only: the loading
(`sam2rl_fast.model.loading.bundled_checkpoint`, `build_model(None)`) is in loading.py.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # sam2rl_fast/
ASSET_DIR = _PACKAGE / "assets"
# SAM 2.1 at image_size 256 on an ImageNet-pretrained EfficientNet-Lite0 trunk (see
# docs/demo-model.md); trained by `python train/train_demo_model.py --run RUN`.
CONFIG = str(_PACKAGE / "configs" / "sam2rl_effnet256.yaml")
CHECKPOINT = ASSET_DIR / "sam2rl_effnet256.pt"
# The first bundled model's config (a from-scratch Hiera of width 24; its checkpoint no
# longer ships): kept so that its checkpoints still load with their config inferred.
LEGACY_CONFIG = str(_PACKAGE / "configs" / "demo_sam2.1_tiny256.yaml")

