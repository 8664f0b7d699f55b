#!/usr/bin/env bash
# Build (once) a Debian bookworm base image with Python 3.11 from Debian's packages, for machines that reach
# Debian's mirror but no image registry: debootstrap + docker import. Cached: exits at once if the tag exists.
# Usage: deploy/base-image.sh [TAG]   (default resnet-serve-base:bookworm)
set -euo pipefail
TAG=${1:-resnet-serve-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
root=$(mktemp -d /tmp/resnet-serve-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG"
echo "built base image $TAG"
