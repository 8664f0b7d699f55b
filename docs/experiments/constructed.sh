#!/usr/bin/env bash
# The constructed solution (paper section 3.1): fine-tune the 56-layer nets built from the trained 20-layer nets
# (identity blocks added by training.models.deepen), beside the 20-layer nets fine-tuned with the same recipe.
# Needs runs/degradation/{resnet20,plain20}/last.pt. Usage: docs/experiments/constructed.sh [DATA] [THREADS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
THREADS=${2:-0}
EPOCHS=${3:-3}
common=(--dataset cifar10 --data-dir "$DATA" --epochs "$EPOCHS" --batch-size 128 --lr 0.01 --momentum 0.9
        --weight-decay 1e-4 --lr-schedule paper --amp bf16 --channels-last --seed 1 --threads "$THREADS" --no-progress
        --resume auto)
for shallow in resnet20 plain20; do
  deep=${shallow/20/56}
  .venv/bin/python training/train.py --model "$shallow" --init-from "runs/degradation/$shallow/last.pt" \
    "${common[@]}" --output-dir "runs/constructed/$shallow-finetuned"
  .venv/bin/python training/train.py --model "$deep" --init-from "runs/degradation/$shallow/last.pt" --deepen 56 \
    "${common[@]}" --output-dir "runs/constructed/$deep-from-$shallow"
done
