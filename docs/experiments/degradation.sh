#!/usr/bin/env bash
# The degradation experiment (paper Figure 6): plain20, plain56, resnet20, resnet56 with one identical recipe.
# Resumable: re-running continues each run from its last.pt. Usage: docs/experiments/degradation.sh [DATA] [THREADS]
# The depth sweep of Table 6 on the same recipe: MODELS="resnet32 resnet44 resnet110" docs/experiments/degradation.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
THREADS=${2:-0}
EPOCHS=${EPOCHS:-30}
MODELS=${MODELS:-resnet20 plain20 resnet56 plain56}
for model in $MODELS; do
  # The paper (section 4.2) starts its 110-layer net at lr 0.01 for ~400 iterations: 0.1 is too large to start converging.
  warmup=(--warmup-iters 0)
  [ "$model" = resnet110 ] && warmup=(--warmup-iters 400 --warmup-lr 0.01 --warmup-mode constant)
  .venv/bin/python training/train.py --model "$model" --dataset cifar10 --data-dir "$DATA" "${warmup[@]}" \
    --epochs "$EPOCHS" --batch-size 128 --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --lr-schedule paper \
    --amp bf16 --channels-last --seed 0 --threads "$THREADS" --no-progress \
    --output-dir "runs/degradation/$model" --resume auto
done
