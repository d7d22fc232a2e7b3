#!/usr/bin/env bash
# Train the bundled model on a lent GPU in ONE device call (start, install, train, pack
# in under 10 minutes), then fetch and unpack the run here. From the repository root:
#
#   bash train/device/wheels.sh                                    # once, here
#   device run  carry=[".whl"]  timeout_s=600  command:
#     OUT=$OUT MINUTES=7 bash train/device/train_gpu.sh --batch 32 --lr 2e-4 \
#       --init sam2rl_fast/assets/sam2rl_effnet256.pt --pointer-dropout 0.3
#   python train/carry_run.py unpack <files_at>/carry train/runs/gpu1     # here
#   sam2rl-fast eval --model train/runs/gpu1/model.pt --videos 8 --frames 48 --out ...
#
# A run is continued on the next machine by carrying its packed files back:
#   cp -r <files_at>/carry ./.carry  (git-ignored) and  FROM=.carry ... train_gpu.sh (same
#   options, carry=[".whl", ".carry"]): it is unpacked and resumed exactly.
#
# Arguments after the script go to train/train_demo_model.py. Unless --steps is given, a
# 45-second probe run measures s/step and the run is planned to end (its cosine schedule
# too) within MINUTES. Everything written under $OUT: carry/ (pack_run: carry.json,
# model.pt, 5 state.pt.partNN) and train.log: 8 files, what the device tool returns at most.
# DEVICE=cpu runs the same steps on a CPU (how this script is tested).
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
PY=${PY:-python3}
RUN=${RUN:-/tmp/sam2rl-run}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/train.log") 2>&1  # everything below, the probe too, into one log
source train/device/use_wheels.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, sam2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

ARGS=("$@")
RESUME=()
if [ -n "${FROM:-}" ]; then
  "$PY" train/carry_run.py unpack "$FROM" "$RUN"
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
"$PY" train/carry_run.py pack "$RUN" "$OUT/carry"
exit "$rc"
