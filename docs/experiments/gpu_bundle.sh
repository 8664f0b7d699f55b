#!/usr/bin/env bash
# Prepare, on this machine, what docs/experiments/gpu-serve.sh needs on a lent GPU machine that the machine's image
# lacks (it has PyTorch, CUDA 13 libraries and the CPU build of onnxruntime, but no onnxruntime-gpu, no FastAPI (nor
# the opentelemetry-api it imports) and no wrk), in the ignored folder .gpu/:
#   .gpu/p01 .. .gpu/pNN  the onnxruntime-gpu wheel (255 MB) cut into parts that each fit one call's 64 MiB
#                          beside the working tree, carried one per call while the machine stays warm;
#   .gpu/kit               its file name (wheel-name) and parts (parts), the service's missing wheels, wrk with its LuaJIT library, 24 of the shared photos;
#                          carried with the last call.
# Usage (repository root, needs PyPI): docs/experiments/gpu_bundle.sh [PART_MB]   (default 36)
set -euo pipefail
cd "$(dirname "$0")/../.."
PART_MB=${1:-36}
PYVER=${PYVER:-3.12}  # the device image's python3 (3.11 here: a local dry run of gpu-serve.sh)
PHOTOS=${PHOTOS:-../shared/data/photos}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}  # built for CUDA 13, like the image's PyTorch (cu130)
pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" "${@:2}"
}
rm -rf .gpu && mkdir -p .gpu/kit/wheels .gpu/kit/bin .gpu/kit/lib .gpu/kit/photos .gpu/whole
# The serving extra's packages the image does not have, at the versions this repository is tested with.
versions() { .venv/bin/python -m pip freeze | grep -i -E "^($1)==" ; }
mapfile -t serving < <(versions "fastapi|starlette|uvicorn|pydantic|pydantic[-_]core|pydantic[-_]settings|python-dotenv|python-multipart|annotated[-_]types|annotated-doc|typing[-_]inspection|typing[-_]extensions|httptools|opentelemetry[-_]api")
pip_download .gpu/kit/wheels "${serving[@]}"
pip_download .gpu/whole "$ORT_GPU"
pip_download .gpu/kit/wheels --platform manylinux1_x86_64 py-spy==0.4.3  # a profile of the service under load
cp "$(command -v wrk)" .gpu/kit/bin/
cp "$(readlink -f "$(ldd "$(command -v wrk)" | awk '/libluajit/ {print $3}')")" .gpu/kit/lib/libluajit-5.1.so.2
find "$PHOTOS" -maxdepth 1 \( -iname '*.jpg' -o -iname '*.jpeg' \) | sort | head -24 | xargs -I{} cp {} .gpu/kit/photos/
(cd .gpu && split -b "${PART_MB}M" -d -a 2 --numeric-suffixes=1 whole/*.whl p && ls whole > kit/wheel-name \
  && ls p?? > kit/parts && rm -rf whole)
ls -la .gpu .gpu/kit/wheels
du -sh .gpu/kit
