#!/usr/bin/env bash
# The service on a lent GPU machine: ONNX Runtime's CUDA provider (and TensorRT, where its libraries exist) for
# ResNet-50/18 with random weights, in process and over HTTP. Run on the device machine, in the repository root,
# as the last of several calls (docs/experiments/serving-log.md, "Serving on a GPU", says why and how):
#   here, once:     docs/experiments/gpu_bundle.sh    -> .gpu/p01, p02, ... (onnxruntime-gpu in parts, listed in .gpu/kit/parts;
#                   seven at the default 36 MB) and .gpu/kit
#   one call per part but the last: run, carry [".gpu/p01"], command "ls -la .gpu" (then p02, ...; the machine keeps
#                   them while it stays warm, 30 s between calls)
#   the last call:  run, carry [".gpu/<last part>", ".gpu/kit"], command
#                   "export PYTHONUNBUFFERED=1; OUT=$OUT docs/experiments/gpu-serve.sh 2>&1 | tee $OUT/log.txt",
#                   timeout_s 580 (the full form takes ~6 min: 5 server configurations and a profile)
# Writes inprocess-gpu.json, http-*.json, dmon-*.txt (and a profile) packed into OUT/gpu-serve-results.tgz, and
# prints a summary last. QUICK=1 (for a call with little device time left): ResNet-50 only, the service first,
# shorter windows.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-serve-out}
KIT=.gpu/kit
SITE=/tmp/gpu-site
QUICK=${QUICK:-0}
SECONDS_PER=${SECONDS_PER:-$([ "$QUICK" = 1 ] && echo 5 || echo 10)}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }

# 1. onnxruntime-gpu, joined from the carried parts, and the serving packages the image lacks.
wheel=/tmp/$(cat $KIT/wheel-name)
mapfile -t parts < $KIT/parts  # as docs/experiments/gpu_bundle.sh cut the wheel
missing=$(for p in "${parts[@]}"; do [ -f ".gpu/$p" ] || echo "$p"; done)
[ -z "$missing" ] || { echo "parts missing: $missing (the machine went back between calls?)"; exit 2; }
(cd .gpu && cat "${parts[@]}") >"$wheel"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$wheel" $KIT/wheels/*.whl || exit 3
export PYTHONPATH=$SITE:$PWD
# The CUDA provider loads libcudart/cublas/cudnn/cufft/curand: the image has them as PyTorch's nvidia-* wheels.
nvidia_libs=$(python3 -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))" 2>/dev/null)/nvidia
export LD_LIBRARY_PATH=$(find "$nvidia_libs" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:):$PWD/$KIT/lib:${LD_LIBRARY_PATH:-}
export PATH=$PWD/$KIT/bin:$PATH
nvidia-smi -L
python3 -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.__file__); print(ort.get_available_providers())"
wrk --version 2>&1 | head -1
stamp "installed"

inprocess() {  # In process: ORT alone on pre-made tensors (host arrays in and out, as the service passes them),
  # decoding alone, and the plain loop with 14 decoding threads.
  python3 bench/inprocess.py --photos "$PWD/$KIT/photos" --backends Tensorrt/fp16 Tensorrt/fp32 CUDA/fp32 --loop-threads 14 \
    --json "$OUT/inprocess-gpu.json" "$@"
  stamp "in-process done"
}
http() {  # http NAME MODEL SERVICE-ARGS: the service over HTTP (wrk, raw JPEG bodies), GPU utilisation each second
  nvidia-smi dmon -s u -d 1 >"$OUT/dmon-$1.txt" 2>&1 &
  local dmon=$!
  python3 bench/http_load.py --model "$2" --photos "$PWD/$KIT/photos" --concurrency 64 256 --seconds "$SECONDS_PER" --no-naive \
    --service-args "$3" --json "$OUT/http-$1.json"
  kill $dmon 2>/dev/null
  stamp "http $1 done"
}
if [ "$QUICK" = 1 ]; then
  http resnet50-b64 resnet50 "--max-batch-size 64 --preprocess-workers 14"
  inprocess --models resnet50 --batches 1 8 32 128 --seconds 1
else
  inprocess --models resnet50 resnet18 --batches 1 8 32 64 128 256 --seconds 2
  http resnet50-b64 resnet50 "--max-batch-size 64 --preprocess-workers 14"
  http resnet50-b64-unpadded resnet50 "--max-batch-size 64 --preprocess-workers 14 --batch-padding never"
  http resnet50-b64-processes resnet50 "--max-batch-size 64 --preprocess-workers 14 --preprocess-processes"
  http resnet50-b16 resnet50 "--max-batch-size 16 --preprocess-workers 14"
  http resnet18-b64 resnet18 "--max-batch-size 64 --preprocess-workers 14"
  # Where the service's CPU goes at c=256 (py-spy over the load script and the server it starts; raw stacks).
  timeout 60 "$SITE/bin/py-spy" record --subprocesses --nonblocking --threads -r 100 -f raw -o "$OUT/profile-resnet50.txt" -- \
    python3 bench/http_load.py --model resnet50 --photos "$PWD/$KIT/photos" --concurrency 256 --seconds 10 --no-naive \
    --service-args "--max-batch-size 64 --preprocess-workers 14" >/dev/null 2>&1
  stamp "profile done"
fi

# 4. Summary.
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
inproc = out / "inprocess-gpu.json"
for r in json.loads(inproc.read_text()) if inproc.exists() else []:
    curve = " ".join(f"b{n}:{v['img_s']:.0f}" for n, v in r["batch"].items())
    print(f"{r['model']:<9} {r['backend']:<14} ORT {curve} | decode 1 thread {r['preprocess_img_s']:.0f} | loop {r['loop_img_s']:.0f} img/s")
for f in sorted(out.glob("http-*.json")):
    d = json.loads(f.read_text())
    util = [int(x.split()[1]) for x in (out / f"dmon-{f.stem[5:]}.txt").read_text().splitlines()
            if x.strip() and not x.startswith("#") and x.split()[1].isdigit()]
    for row in d["rows"]:
        print(f"{f.stem:<22} {d['backend']:<12} c={row['concurrency']:<4} {row.get('steady_req_s') or row['req_s']:.0f} req/s "
              f"p50 {row['p50_ms']:.0f} p99 {row['p99_ms']:.0f} ms, mean batch {row.get('mean_batch', 0):.1f}, "
              f"errors {row['errors'] + row['non2xx']}, GPU util max {max(util, default=0)}%")
PY
# At most 8 files come back from a call: pack the results into one archive (the caller's log stays beside it).
(cd "$OUT" && tar czf gpu-serve-results.tgz --exclude log.txt --exclude gpu-serve-results.tgz . \
  && find . -maxdepth 1 -type f ! -name log.txt ! -name gpu-serve-results.tgz -delete)
ls -la "$OUT"
stamp "done"
