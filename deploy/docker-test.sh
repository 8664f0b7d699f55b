#!/usr/bin/env bash
# End-to-end test of the container: engine -> base image -> image build -> compose up -> health -> classify
# -> /metrics -> a pin across a restart -> SIGTERM drain -> teardown. Loopback only. Cleans up even when it fails.
# Usage: deploy/docker-test.sh   (env: BASE_IMAGE, KEEP_IMAGE=1 to keep the built image)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[docker-test] %s\n' "$*"; }
fail() { log "FAILED: $*"; exit 1; }

# 1. A Docker engine (install and start one if only the client is here).
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    log "installing docker.io"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  fi
  log "starting dockerd"
  (dockerd >/tmp/resnet-serve-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || fail "dockerd did not start (see /tmp/resnet-serve-dockerd.log)"
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose; }
  COMPOSE=(docker-compose)
fi

# 2. Base image: registries are unreachable here, so build Debian bookworm with debootstrap (cached).
export BASE_IMAGE=${BASE_IMAGE:-resnet-serve-base:bookworm}
if [ "$BASE_IMAGE" = resnet-serve-base:bookworm ]; then deploy/base-image.sh "$BASE_IMAGE"; fi

# 3. pip inside the build trusts the host's CA bundle (TLS-intercepting proxies).
mkdir -p .docker-certs
cp /etc/ssl/certs/ca-certificates.crt .docker-certs/ca.pem
export PIP_CERT=.docker-certs/ca.pem
export PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export BIND_ADDRESS=127.0.0.1
export COMPOSE_PROJECT_NAME=resnet-serve-e2e
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} COMPOSE_DOCKER_CLI_BUILD=${COMPOSE_DOCKER_CLI_BUILD:-0}
compose() { "${COMPOSE[@]}" -f compose.yaml "$@"; }

cleanup() {
  log "tearing down"
  compose logs --no-color server >/tmp/resnet-serve-e2e-server.log 2>&1 || true
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf .docker-certs
}
trap cleanup EXIT

# 4. Build and start.
log "building resnet-serve:latest on $BASE_IMAGE"
started=$(date +%s)
compose build server
log "image size: $(docker image inspect resnet-serve:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
docker run --rm --entrypoint python3 resnet-serve:latest -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)' \
  || fail "torch is installed in the runtime image"
[ "$(docker run --rm --entrypoint id resnet-serve:latest -u)" = 10001 ] || fail "the image does not run as uid 10001"
compose up -d server
container=$(compose ps -q server)

# 5. Wait for the HEALTHCHECK (/readyz).
for _ in $(seq 90); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$container")
  [ "$status" = healthy ] && break
  [ "$(docker inspect --format '{{.State.Running}}' "$container")" = true ] || fail "container exited"
  sleep 2
done
[ "$status" = healthy ] || fail "container not healthy: $status"
log "healthy after $(( $(date +%s) - started )) s (build included)"

# 6. Classify a photo, check metrics.
url="http://127.0.0.1:$PORT"
photo=tests/fixtures/cifar10/cat_1.jpg
body=$(curl -sf -X POST --data-binary @"$photo" -H 'Content-Type: image/jpeg' "$url/classify?top_k=3")
echo "$body" | python3 -c 'import json, sys; r = json.load(sys.stdin); assert len(r["predictions"]) == 3, r; print("[docker-test] classify:", r["model"], r["version"], r["predictions"][0])'
curl -sf -F "file=@$photo" "$url/classify" >/dev/null || fail "multipart classify"
# Read the whole page first: `curl | grep -q` fails under pipefail when grep exits before curl has written all.
metrics=$(curl -sf "$url/metrics") || fail "/metrics did not answer"
grep -q 'resnet_serve_requests_total{route="/classify",status="200"}' <<<"$metrics" || fail "/metrics lacks the request counter"

# 7. A pin survives a restart: the rollout state lives on the compose volume, not in the container.
name=$(curl -sf "$url/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)["models"][0]["name"])')
curl -sf -X POST "$url/admin/models/$name/pin" >/dev/null || fail "pin"
compose restart server >/dev/null
for _ in $(seq 60); do curl -sf "$url/readyz" >/dev/null 2>&1 && break; sleep 1; done
pinned=$(curl -sf "$url/v1/models/$name" | python3 -c 'import json, sys; print(json.load(sys.stdin)["rollout"]["pinned"])')
[ "$pinned" != None ] || fail "the pin was lost in the restart"
log "pin kept across a restart (version $pinned)"
container=$(compose ps -q server)

# 8. SIGTERM while requests are in flight: they finish, the container exits 0 and logs the drain.
for i in $(seq 20); do
  curl -s -o /dev/null -w '%{http_code}\n' -X POST --data-binary @"$photo" -H 'Content-Type: image/jpeg' "$url/classify" >>/tmp/resnet-serve-e2e-codes.txt &
done
sleep 0.2
docker kill --signal SIGTERM "$container" >/dev/null
wait
for _ in $(seq 30); do [ "$(docker inspect --format '{{.State.Running}}' "$container")" = false ] && break; sleep 1; done
code=$(docker inspect --format '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
logs=$(docker logs "$container" 2>&1)
grep -q '"drained"\|drained' <<<"$logs" || fail "no drain in the logs"
bad=$(grep -v -E '^(200|503|000)$' /tmp/resnet-serve-e2e-codes.txt || true)
rm -f /tmp/resnet-serve-e2e-codes.txt
[ -z "$bad" ] || fail "requests failed during the drain: $bad"
log "SIGTERM drained, exit code 0"
log "passed"
