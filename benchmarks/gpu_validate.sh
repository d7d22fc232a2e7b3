#!/usr/bin/env bash
# GPU validation in one go on a GPU machine whose python3 already holds torch (no network
# needed): build the extension for the local GPU, run the CUDA tests, then the benchmarks
# against stock sam2. The pure-Python deps such a machine may lack (sam2 and its config
# stack) come as wheels in ./.whl (`bash train/gpu/wheels.sh` on a machine with network,
# then copy .whl/ along with the checkout). Logs go to OUT_DIR.
#
#   OUT_DIR=gpu-out bash benchmarks/gpu_validate.sh
set -uo pipefail
OUT_DIR=${OUT_DIR:-gpu-out}; mkdir -p "$OUT_DIR"
source train/gpu/use_wheels.sh
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} SAM2RL_FAST_CUDA=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT_DIR/device.txt"
date -u +%FT%TZ | tee -a "$OUT_DIR/device.txt"
{ time python3 -m pip install --no-build-isolation --no-deps --no-index -e . ; } >"$OUT_DIR/build.log" 2>&1 \
  || { tail -40 "$OUT_DIR/build.log"; exit 1; }
tail -3 "$OUT_DIR/build.log"
python3 -m sam2rl_fast.cli info | tee -a "$OUT_DIR/device.txt"
timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT_DIR/pytest_cuda.txt" | tail -15
timeout 150 python3 benchmarks/bench_memory_attention.py --device cuda --dtype bfloat16 --sizes 512 1024 \
  --batch 1 4 2>&1 | tee "$OUT_DIR/bench_memory_attention_cuda.txt"
timeout 150 python3 benchmarks/bench_tracker.py --device cuda --sizes 512 1024 --objects 1 4 --frames 12 \
  2>&1 | grep -v -e 'propagate in video' -e 'frame loading' | tee "$OUT_DIR/bench_tracker_cuda.txt"
