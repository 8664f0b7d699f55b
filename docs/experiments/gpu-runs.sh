#!/usr/bin/env bash
# The CIFAR-10 runs of one lent-GPU call (a fixed time budget, one command): the default model with the paper's
# recipe (resnet56, 64k iterations, all 50k training images) and, when the measured speed leaves room, the
# degradation runs plain56 and resnet56 with the same 30-epoch recipe as docs/experiments/degradation.sh.
#
# Usage (repository root, on the GPU machine):
#   OUT=DIR BUDGET_S=530 docs/experiments/gpu-runs.sh [DATA]
# It times two resnet56 epochs first, then picks what fits in BUDGET_S seconds (counted from its start):
#   room for the paper recipe and the degradation runs side by side -> all three at once;
#   room for the paper recipe only -> that alone;
#   less -> the paper's schedule shape (lr /10 at 50% and 75%) over as many epochs as fit.
# Every run is stopped by BUDGET_S; each run directory (metrics.jsonl, args.json, last.pt, log) is packed into
# OUT/<run>.tgz, and a cut run resumes anywhere with train.py --resume <its last.pt>.
set -uo pipefail
DATA=${1:-data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs/gpu-out}
BUDGET_S=${BUDGET_S:-530}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
RUNS=${RUNS:-/tmp/gpu-runs}
PAPER_EPOCHS=164  # ceil(64000 iterations / 391 batches of 128)
DEGRADATION_EPOCHS=30
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }
mkdir -p "$OUT" "$RUNS"

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
nproc

common=(--dataset cifar10 --data-dir "$DATA" --cache-dir "$RUNS/cache" --amp bf16 --channels-last --seed 0
  --device "$DEVICE" --no-progress)
train() {  # train NAME SECONDS FLAGS...: one run in RUNS/NAME, stopped after SECONDS
  local name=$1 seconds=$2
  shift 2
  mkdir -p "$RUNS/$name"
  timeout --signal=TERM "$seconds" $PY training/train.py "${common[@]}" --output-dir "$RUNS/$name" "$@" \
    >"$RUNS/$name/log.txt" 2>&1
  echo "$name: exit $? after $(elapsed)s"
}

# 1. Speed: two resnet56 epochs (the first also decodes the JPEGs into the tensor cache and warms cuDNN).
train calib 150 --model resnet56 --epochs 2 --lr-schedule paper
tail -3 "$RUNS/calib/log.txt"
epoch_s=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])['seconds'])" \
  "$RUNS/calib/metrics.jsonl") || { echo "calibration failed"; cat "$RUNS/calib/log.txt"; exit 1; }
left=$((BUDGET_S - $(elapsed) - 25))  # 25 s to pack the results
plan=$($PY -c "
import math, sys
epoch_s, left, paper, degr = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# Side by side the runs share the GPU; count the two degradation runs as half their serial time.
if left >= epoch_s * (paper + degr) * 1.05:
    print('paper+degradation')
elif left >= epoch_s * paper * 1.05:
    print('paper')
else:
    print(f'epochs {max(2, math.floor(left / epoch_s / 1.05))}')
" "$epoch_s" "$left" "$PAPER_EPOCHS" "$DEGRADATION_EPOCHS")
plan=${PLAN:-$plan}  # PLAN=... forces one (to try the script on a CPU with a toy data set)
echo "resnet56 epoch ${epoch_s}s, ${left}s left: plan $plan"

left=$((BUDGET_S - $(elapsed) - 25))
paper=(--model resnet56 --recipe paper-cifar --val-split 0)
case $plan in
  paper+degradation)
    for model in plain56 resnet56; do
      train "degradation-$model" "$left" --model "$model" --epochs "$DEGRADATION_EPOCHS" --batch-size 128 \
        --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --lr-schedule paper &
    done
    train default "$left" "${paper[@]}" &
    wait ;;
  paper) train default "$left" "${paper[@]}" ;;
  *) train default "$left" "${paper[@]}" --epochs "${plan#epochs }" ;;
esac

for dir in "$RUNS"/*/; do
  name=$(basename "$dir")
  [ "$name" = cache ] && continue
  tar czf "$OUT/$name.tgz" -C "$RUNS" --exclude best.pt "$name"
  tail -2 "$dir/log.txt"
done
ls -la "$OUT"
echo "done after $(elapsed)s"
