#!/usr/bin/env bash
# GPU validation in one go (build, CUDA tests, benchmarks) for a lent GPU machine whose
# python3 already holds torch. Pure-Python deps missing there may be put on PYTHONPATH.
# Logs go to $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} SAM2RL_FAST_CUDA=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/device.txt"
time python3 -m pip install --no-build-isolation --no-deps --no-index -e . >"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
python3 -m sam2rl_fast.cli info | tee -a "$OUT/device.txt"
python3 -m pytest -q -m cuda tests 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5
python3 -m pytest -q tests 2>&1 | tee "$OUT/pytest_all.txt" | tail -5
python3 benchmarks/bench_memory_bank.py --device cuda 2>&1 | tee "$OUT/bench_memory_bank_cuda.txt"
