# Two commands on a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 0.0.0.0
PORT   ?= 8000
MODELS ?= models

# bench: the benchmark suite (minutes; results into bench/results/, rendered into docs/benchmarks.md by bench/report.py).
.PHONY: setup setup-serve test test-serve test-fast lint tools bench soak serve models-table default-model imagenet-model docker-build docker-build-gpu docker-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Every extra but `gpu` (onnxruntime-gpu would replace the onnxruntime module).
# onnxruntime, onnxruntime-openvino and onnxruntime-gpu all install the module `onnxruntime`: exactly one may
# be present, so drop whichever the extras do not ask for on this platform before installing.
define one_onnxruntime
	@wanted=$$($(PY) -c "import platform, sys; print('onnxruntime-openvino' if sys.platform == 'linux' and platform.machine() == 'x86_64' else 'onnxruntime')"); \
	for other in onnxruntime onnxruntime-openvino onnxruntime-gpu; do \
	  if [ "$$other" != "$$wanted" ] && $(PIP) show -q $$other 2>/dev/null; then $(PIP) uninstall -y -q $$other; fi; \
	done
endef

$(VENV)/.installed-all: pyproject.toml | $(PY)
	$(one_onnxruntime)
	$(PIP) install -e '.[serve,train,export,load,dev,bench]'
	touch $@ $(VENV)/.installed-serve

$(VENV)/.installed-serve: pyproject.toml | $(PY)
	$(one_onnxruntime)
	$(PIP) install -e '.[serve]'
	touch $@

setup: $(VENV)/.installed-all

setup-serve: $(VENV)/.installed-serve

# ruff, and the layering as import-linter contracts (pyproject.toml [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Command-line tools the suite drives, from Debian's packages when missing: wrk (HTTP benchmark), and Chromium with
# its driver for the web page's browser tests (never a browser download).
tools:
	@command -v wrk >/dev/null || (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk))
	@(command -v chromium && command -v chromedriver) >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  chromium chromium-driver || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver))

# The Open Inference Protocol's OpenAPI document for tests/test_v2_conformance.py (fetched: see the script).
OIP_SPEC := build/open-inference-protocol/dataplane.json
$(OIP_SPEC): | $(PY)
	$(PY) tests/tools/fetch_oip_spec.py $@

# The KServe SDK, in its own environment (its pins differ from ours), for tests/tools/validate_kserve.py.
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/pip install --quiet kserve==0.21.0 pyyaml
	touch $@

# The whole suite: the tests marked `full` (torch, the exporter, locust) here, the rest (the service's tests) in
# an environment with only the serve and dev extras (test-serve), which proves they need no torch.
test: setup lint tools $(OIP_SPEC) $(KSERVE_VENV)/.installed
	$(PY) -m pytest -m full
	$(MAKE) test-serve

# The service's tests without torch: .venv-serve holds the serve and dev extras only.
SERVE_VENV := .venv-serve
$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -e '.[serve,dev]'
	touch $@

test-serve: $(SERVE_VENV)/.installed tools $(OIP_SPEC) $(KSERVE_VENV)/.installed
	@! $(SERVE_VENV)/bin/python -c 'import torch' 2>/dev/null || (echo "torch is installed in $(SERVE_VENV)"; exit 1)
	$(SERVE_VENV)/bin/python -m pytest -m "not full"

# Everything but the end-to-end tests (processes, training, browsers): a minute or two.
test-fast: setup
	$(PY) -m pytest -m "not slow"

serve: setup-serve
	@if [ ! -f service/__main__.py ]; then \
	  echo "The service is not built yet (see the inference-service issue)."; exit 2; fi
	$(PY) -m service --model-repository $(MODELS) --host $(HOST) --port $(PORT)

bench: setup tools
	$(PY) bench/inprocess.py --models resnet50 resnet50-int8 resnet18 resnet18-int8 cifar10-resnet56 --json bench/results/inprocess.json
	for m in resnet50 resnet50-int8 resnet18 resnet18-int8 cifar10-resnet56; do \
	  $(PY) bench/http_load.py --model $$m --limits-seconds 3 --json bench/results/http-$$m.json || exit 1; done
	$(PY) bench/http_load.py --model resnet50-int8 --concurrency 8 --no-naive --big-photos --memory-requests 20000 \
	  --json bench/results/http-resnet50-int8-extra.json
	$(PY) bench/event_loop_cost.py --model cifar10-resnet56 --json bench/results/event-loop-cost-cifar10-resnet56.json
	$(PY) bench/latency.py --rounds 5 --seconds 3 --json bench/results/latency-c1.json
	$(PY) bench/asgi_servers.py --model cifar10-resnet56 --rounds 3 --seconds 4 --json bench/results/asgi-servers-cifar10-resnet56.json
	$(PY) bench/report.py

# 100,000 requests at concurrency 16 over the photos: RSS at 1k, 10k and 100k requests, every error counted (~10 min).
soak: setup tools
	$(PY) bench/soak.py --model cifar10-resnet56 --requests 100000 --concurrency 16 --json bench/results/soak.json
	$(PY) bench/report.py

models-table: setup
	$(PY) -m training.models

# Retrain and export the bundled default model (docs/experiments/default-model.md; ~8 min on an H200, ~6.5 h on two CPU cores).
CIFAR ?= ../shared/data/cifar10-jpeg.tar.gz
default-model: setup
	docs/experiments/default-model.sh $(CIFAR) 0 $(MODELS)

# torchvision's ResNet-50 IMAGENET1K_V2 weights into models/resnet50 (downloads; offline pass WEIGHTS_FILE=...).
imagenet-model: setup
	$(PY) -m export --torchvision resnet50 --weights IMAGENET1K_V2 --name resnet50 --repository $(MODELS) \
	  $(if $(WEIGHTS_FILE),--weights-file $(WEIGHTS_FILE),)

# Container image (BASE_IMAGE=... for another base, e.g. resnet-serve-base:bookworm from deploy/base-image.sh).
BASE_IMAGE ?= python:3.11-slim
# CUDA and cuDNN come as wheels with onnxruntime-gpu (its cuda/cudnn extras), the driver from the host: no CUDA base needed.
GPU_BASE_IMAGE ?= $(BASE_IMAGE)
docker-build:
	docker build -t resnet-serve:latest --build-arg BASE_IMAGE=$(BASE_IMAGE) $(if $(PIP_CERT),--build-arg PIP_CERT=$(PIP_CERT),) .

docker-build-gpu:
	docker build -t resnet-serve:gpu --build-arg VARIANT=gpu --build-arg BASE_IMAGE=$(GPU_BASE_IMAGE) $(if $(PIP_CERT),--build-arg PIP_CERT=$(PIP_CERT),) .

# Build on a debootstrapped Debian base, run with compose, classify, check metrics and the SIGTERM drain.
docker-test:
	deploy/docker-test.sh

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build *.egg-info
