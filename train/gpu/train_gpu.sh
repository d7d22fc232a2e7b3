#!/usr/bin/env bash
# Train the bundled model on a GPU machine without network access, in one command: install
# the wheels brought along, plan the run to fit MINUTES, train, pack the run for the way
# back. From the repository root:
#
#   bash train/gpu/wheels.sh                       # once, on a machine with network: ./.whl
#   # on the GPU machine, in a copy of the checkout that includes .whl/:
#   OUT_DIR=gpu-run MINUTES=7 bash train/gpu/train_gpu.sh --batch 32 --lr 2e-4 \
#     --init sam2rl_fast/assets/sam2rl_effnet256.pt --pointer-dropout 0.3
#   # back where the run is evaluated, with gpu-run/ copied there:
#   python train/pack_run.py unpack gpu-run/packed -o train/runs/gpu1
#   sam2rl-fast eval --model train/runs/gpu1/model.pt --videos 8 --frames 48 --out ...
#
# A run is continued on a later GPU machine from its archive: copy gpu-run/packed into the
# checkout as .packed-run/ (git-ignored) and run  FROM=.packed-run ... train_gpu.sh  with the
# same options: it is unpacked and resumed exactly.
#
# Arguments after the script go to train/train_demo_model.py. Unless --steps is given, a
# 45-second probe run measures s/step and the run is planned to end (its cosine schedule
# too) within MINUTES. Everything is written under OUT_DIR: packed/ (train/pack_run.py:
# run-pack.json, model.pt, state.pt in parts of at most PART_SIZE, default 16M) and
# train.log. DEVICE=cpu runs the same steps on a CPU (how this script is tested).
set -euo pipefail
OUT_DIR=${OUT_DIR:-gpu-run}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
PART_SIZE=${PART_SIZE:-16M}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
PY=${PY:-python3}
RUN=${RUN:-/tmp/sam2rl-run}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/train.log") 2>&1  # everything below, the probe too, into one log
source train/gpu/use_wheels.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, sam2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

ARGS=("$@")
RESUME=()
if [ -n "${FROM:-}" ]; then
  "$PY" train/pack_run.py unpack "$FROM" -o "$RUN"
  RESUME=(--resume)
elif [[ " ${ARGS[*]} " != *" --steps "* ]]; then
  # probe: the same options on a throwaway run; the last logged s/step (workers warm)
  rm -rf /tmp/sam2rl-probe
  "$PY" train/train_demo_model.py --run /tmp/sam2rl-probe --device "$DEVICE" --workers "$WORKERS" \
    --steps 100000 --minutes 0.75 --log-every 5 --eval-videos 0 "${ARGS[@]}" | tee /tmp/sam2rl-probe.log
  SPS=$(grep -o '[0-9.]* s/step' /tmp/sam2rl-probe.log | tail -1 | cut -d' ' -f1)
  STEPS=$("$PY" -c "print(max(20, int(float('$SPS') and $MINUTES * 60 * 0.9 / float('$SPS'))))")
  echo "probe: $SPS s/step -> --steps $STEPS for $MINUTES minutes"
  rm -rf /tmp/sam2rl-probe
  ARGS+=(--steps "$STEPS")
fi
set +e
"$PY" train/train_demo_model.py --run "$RUN" "${RESUME[@]}" --device "$DEVICE" --workers "$WORKERS" \
  --minutes "$MINUTES" --eval-videos 0 "${ARGS[@]}"
rc=$?
set -e
"$PY" train/pack_run.py pack "$RUN" -o "$OUT_DIR/packed" --part-size "$PART_SIZE"
exit "$rc"
