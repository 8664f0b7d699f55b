#!/usr/bin/env bash
# Table 6 with the paper's own recipe (issue #24): --recipe paper-cifar (64k iterations at batch 128, lr 0.1
# divided by 10 at 32k and 48k, weight decay 1e-4, momentum 0.9, the 45k/5k split; resnet110 warms up at 0.01).
# Resumable: each run continues from runs/paper/NAME/last.pt (NAME: MODEL, or TAG-MODEL with TAG set). A run that
# outlives its machine is kept with its checkpoint in docs/experiments/runs/paper-NAME/ (`keep NAME`) and continues
# from there when runs/ is empty.
#   MODELS="resnet20 plain20" docs/experiments/paper-table6.sh [DATA]     # train (nice 19; SIGSTOP it to benchmark)
#   docs/experiments/paper-table6.sh keep resnet20                        # keep an unfinished run's state
#   TAG=originals AMP=none MODELS=resnet20 docs/experiments/paper-table6.sh data/cifar10-originals.tar
# AMP: bf16 (default), or none on a CPU without native bf16 (AVX2 only), where bf16 is emulated and far slower.
# TRAIN_FLAGS are passed on to train.py. TRAIN_FLAGS=--compile (torch.compile) depends on the CPU: on 2 cores of an
# Intel Xeon it stepped resnet32 1.3-1.4x faster (bf16, channels_last, batch 128: 759-800 -> 1,034-1,069 img/s,
# plain20 only 1.07-1.10x); on 2 cores of an AMD EPYC it trained resnet32 at 434-439 img/s against 590 eager.
set -euo pipefail
cd "$(dirname "$0")/../.."

keep() {  # the run's metrics and checkpoint as of its last finished epoch (the run is paused meanwhile)
  local out=runs/paper/$1 kept=docs/experiments/runs/paper-$1 pid
  pid=$(pgrep -f "train.py .*--output-dir $out --resume" || true)
  [ -z "$pid" ] || kill -STOP $pid
  mkdir -p "$kept"
  .venv/bin/python - "$out" "$kept" <<'PY'
import json, shutil, sys
from pathlib import Path
import torch
out, kept = Path(sys.argv[1]), Path(sys.argv[2])
epochs = len(torch.load(out / "last.pt", map_location="cpu", weights_only=True)["metrics"])
lines = (out / "metrics.jsonl").read_text().splitlines()[:epochs]  # metrics.jsonl is written just after last.pt
shutil.copy(out / "last.pt", kept / "last.pt")
shutil.copy(out / "args.json", kept / "args.json")
(kept / "metrics.jsonl").write_text("\n".join(lines) + "\n")
print(f"kept {out} at epoch {epochs}: {json.loads(lines[-1])}")
PY
  [ -z "$pid" ] || kill -CONT $pid
}

if [ "${1:-}" = keep ]; then keep "$2"; exit; fi
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
MODELS=${MODELS:-resnet20 plain20 resnet32 plain32}
for model in $MODELS; do
  name=${TAG:+$TAG-}$model
  out=runs/paper/$name kept=docs/experiments/runs/paper-$name
  if [ ! -f "$out/last.pt" ] && [ -f "$kept/last.pt" ]; then
    mkdir -p "$out" && cp "$kept/last.pt" "$kept/metrics.jsonl" "$kept/args.json" "$out/"
  fi
  nice -n 19 .venv/bin/python training/train.py --model "$model" --recipe paper-cifar --data-dir "$DATA" \
    --amp "${AMP:-bf16}" --channels-last --seed 0 --no-progress --output-dir "$out" --resume auto ${TRAIN_FLAGS:-}
  mkdir -p "$kept" && cp "$out/metrics.jsonl" "$out/args.json" "$kept/" && rm -f "$kept/last.pt"  # finished
done
