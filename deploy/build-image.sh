#!/usr/bin/env bash
# Builds blauth's container image from deploy/Dockerfile and prebuilt static binaries: nothing is
# compiled or pulled, so it works offline and with the classic builder.
#
#   deploy/build-image.sh [BINDIR [TAG]]     # defaults: bin, blauth:latest
#
# BINDIR holds blauthd and blauth-helper built with CGO_ENABLED=0 (`make build` does that; so do
# the linux binaries of `make release`, renamed). DOCKER names the client (default docker;
# podman works too); DOCKER_BUILDKIT defaults to 0, the builder this script was tested with.
set -euo pipefail
fail() { echo "build-image: error: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
bindir=${1:-bin}
tag=${2:-blauth:latest}
docker=${DOCKER:-docker}

for b in blauthd blauth-helper; do
  [ -x "$bindir/$b" ] || fail "$bindir/$b is missing; run 'make build' first (or name the directory that holds the binaries)"
  # A binary linked against libc cannot run in an image without one: refuse it here, rather
  # than let the container fail with a bare "no such file or directory".
  if command -v go >/dev/null 2>&1; then
    go version -m "$bindir/$b" | grep -q 'CGO_ENABLED=0' ||
      fail "$bindir/$b was not built with CGO_ENABLED=0; the image has no libc (run 'make build')"
  fi
done

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$bindir/blauthd" "$bindir/blauth-helper" "$ctx/"
mkdir -m 0755 -p "$ctx/rootfs/run"
mkdir -m 0755 "$ctx/socket"
mkdir -m 0700 "$ctx/socket/blauth"
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "$docker" build -q -t "$tag" "$ctx"
