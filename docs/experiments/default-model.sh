#!/usr/bin/env bash
# The bundled default model: resnet56 on CIFAR-10, 50 epochs, cosine schedule, then exported into the model
# repository with its weights-only checkpoint. Resumable (re-running continues from runs/default/resnet56/last.pt).
# Usage: docs/experiments/default-model.sh [DATA] [THREADS] [REPOSITORY]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
THREADS=${2:-0}
REPOSITORY=${3:-models}
RUN=runs/default/resnet56
.venv/bin/python training/train.py --model resnet56 --data-dir "$DATA" \
  --epochs 50 --batch-size 128 --lr 0.1 --lr-schedule cosine --warmup-iters 391 --warmup-mode linear --warmup-lr 0.01 \
  --weight-decay 5e-4 --amp bf16 --threads "$THREADS" --eval-every 5 --seed 0 --no-progress \
  --resume auto --output-dir "$RUN"
.venv/bin/python export/export.py --checkpoint "$RUN/last.pt" --name cifar10-resnet56 --repository "$REPOSITORY" --with-checkpoint
