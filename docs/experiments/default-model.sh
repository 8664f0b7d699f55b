#!/usr/bin/env bash
# The bundled default model (version 3): resnet56 on CIFAR-10, one 160-epoch cosine run at batch 512 with Cutout 16,
# then exported into the model repository with its weights-only checkpoint (docs/experiments/default-model.md).
# ~8 min on one H200 (where it was trained), ~6.5 h on the two cores of the development CPU (bf16, ~358 img/s).
# Resumable: re-running continues an unfinished run from its last.pt; a finished run is not trained again.
# Usage: docs/experiments/default-model.sh [DATA] [THREADS] [REPOSITORY]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
THREADS=${2:-0}
REPOSITORY=${3:-models}
RUN=runs/default/resnet56-b512-cosine160-cutout16
# lr 0.4 = 0.1 x 512/128 (Goyal et al. 2017) after a 5-epoch (490-step) linear warm-up from 0.04.
.venv/bin/python training/train.py --model resnet56 --data-dir "$DATA" --val-split 0 --cutout 16 \
  --epochs 160 --batch-size 512 --lr 0.4 --lr-schedule cosine --warmup-iters 490 --warmup-mode linear --warmup-lr 0.04 \
  --weight-decay 5e-4 --amp bf16 --channels-last --threads "$THREADS" --seed 0 --eval-every 4 --no-progress \
  --resume auto --output-dir "$RUN"
.venv/bin/python -m export --checkpoint "$RUN/last.pt" --name cifar10-resnet56 --repository "$REPOSITORY" --with-checkpoint \
  --evaluation-images "$DATA"  # the 1,000-image evaluation set the service gates on (unchanged when already there)
