# resnet-serve runtime image: the `serve` extra only (no torch, no compiler), non-root, models baked in at /models,
# rollout state (pins, rollbacks) in /var/lib/resnet-serve: mount a volume there to keep it across containers.
#
#   docker build -t resnet-serve:latest .                                   # CPU (default base: python:3.11-slim)
#   docker build -t resnet-serve:latest --build-arg BASE_IMAGE=resnet-serve-base:bookworm .
#   docker build -t resnet-serve:gpu --build-arg VARIANT=gpu .              # onnxruntime-gpu with CUDA/cuDNN wheels
#   docker build --build-arg PIP_CERT=.docker-certs/ca.pem ...              # TLS-intercepting proxy: a CA bundle in the context
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
# Bases without Python (CUDA images) get it from their distribution.
RUN if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
# README.md is always there; .docker-certs/ only when the Makefile put a CA bundle in the context.
COPY README.md .docker-cert[s] /src/certs/
COPY pyproject.toml README.md /src/
COPY model_repository /src/model_repository
COPY service /src/service
RUN set -eu; \
    if [ -n "$PIP_CERT" ]; then export PIP_CERT="/src/certs/$(basename "$PIP_CERT")"; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip; \
    /opt/venv/bin/pip install '/src[serve]'; \
    if [ "$VARIANT" = "gpu" ]; then \
      /opt/venv/bin/pip uninstall -y onnxruntime onnxruntime-openvino; /opt/venv/bin/pip install '/src[gpu]'; \
    fi; \
    /opt/venv/bin/python -c 'import onnxruntime, service.app; print("providers:", onnxruntime.get_available_providers())'; \
    ! /opt/venv/bin/python -c 'import torch' 2>/dev/null

FROM ${BASE_IMAGE} AS runtime
RUN if ! python3 -c 'import venv' 2>/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; fi \
    && (useradd --uid 10001 --create-home --shell /usr/sbin/nologin app 2>/dev/null || adduser --uid 10001 --disabled-password app) \
    && mkdir -p /var/lib/resnet-serve && chown 10001:10001 /var/lib/resnet-serve
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RESNET_SERVE_MODEL_REPOSITORY=/models \
    RESNET_SERVE_ROLLOUT_STATE_FILE=/var/lib/resnet-serve/rollouts.json \
    RESNET_SERVE_HOST=0.0.0.0 \
    RESNET_SERVE_PORT=8000
USER 10001
WORKDIR /home/app
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python3", "-m", "service"]
