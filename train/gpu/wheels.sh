#!/usr/bin/env bash
# Run on a machine with network access, from the repository root: the pure-Python wheels
# that training needs and a GPU machine without network may lack (sam2 and its config
# stack) into ./.whl, which .gitignore keeps out of commits; copy .whl/ along with the
# checkout (train/gpu/use_wheels.sh installs them there). The GPU machine is expected to
# have torch, torchvision, timm, numpy, scikit-image and matplotlib already.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
mkdir -p .whl
# pinned to what scripts/install.sh installs here; sam2 without its CUDA extension
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 iopath==0.1.10
SAM2_BUILD_CUDA=0 "$PY" -m pip wheel -q --disable-pip-version-check --no-deps \
  --no-build-isolation -w .whl sam2==1.1.0
ls -l .whl
