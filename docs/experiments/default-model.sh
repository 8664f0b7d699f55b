#!/usr/bin/env bash
# The bundled default model: resnet56 on CIFAR-10 trained in two cosine cycles of 50 epochs each (a warm restart,
# as in SGDR: the second run starts from the first run's weights with a fresh optimizer and the same schedule),
# then exported into the model repository with its weights-only checkpoint. ~4 h 20 min on two CPU cores.
# Resumable: re-running continues the unfinished run from its last.pt; a finished run is not trained again.
# Usage: docs/experiments/default-model.sh [DATA] [THREADS] [REPOSITORY]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
THREADS=${2:-0}
REPOSITORY=${3:-models}
FIRST=runs/default/resnet56
SECOND=runs/default/resnet56-cycle2
RECIPE=(--model resnet56 --data-dir "$DATA" --val-split 0
  --epochs 50 --batch-size 128 --lr 0.1 --lr-schedule cosine --warmup-iters 391 --warmup-mode linear --warmup-lr 0.01
  --weight-decay 5e-4 --amp bf16 --threads "$THREADS" --eval-every 5 --no-progress --resume auto)
.venv/bin/python training/train.py "${RECIPE[@]}" --seed 0 --output-dir "$FIRST"
.venv/bin/python training/train.py "${RECIPE[@]}" --seed 1 --init-from "$FIRST/last.pt" --output-dir "$SECOND"
.venv/bin/python export/export.py --checkpoint "$SECOND/last.pt" --name cifar10-resnet56 --repository "$REPOSITORY" --with-checkpoint
