#!/usr/bin/env bash
# Cross-compiles blauthd, blauth-helper and blauth-proxy into BINDIR/<os>_<arch>/ (BINDIR=bin by
# default) for every release target.
#
#   packaging/release.sh VERSION
#
# TARGETS (space-separated os/arch pairs) narrows the list; the default is
# linux and darwin on amd64 and arm64. Builds are CGO_ENABLED=0 and -trimpath: static, and
# the same wherever they are built. Fails on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:?usage: packaging/release.sh VERSION}"
targets="${TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}"
go="${GO:-go}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}" # release builds carry the fixed standard library (Makefile)
bindir="${BINDIR:-bin}"

for target in $targets; do
  os="${target%/*}" arch="${target#*/}"
  out="$bindir/${os}_${arch}"
  mkdir -p "$out"
  echo "release: building $version for $os/$arch into $out/"
  CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" "$go" build -trimpath \
    -ldflags "-s -w -X main.version=$version" \
    -o "$out/" ./cmd/blauthd ./cmd/blauth-helper ./cmd/blauth-proxy
  for b in blauthd blauth-helper blauth-proxy; do
    [ -x "$out/$b" ] || { echo "release: error: $out/$b was not built" >&2; exit 1; }
  done
done
