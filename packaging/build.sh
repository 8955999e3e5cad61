#!/usr/bin/env bash
# Builds the Linux packages (.deb and .rpm, amd64 and arm64) into dist/.
#
#   packaging/build.sh VERSION
#
# ARCHES narrows the architectures (default "amd64 arm64"), PACKAGERS the formats (default
# "deb rpm"). The binaries come from packaging/release.sh (BINDIR/linux_<arch>/, BINDIR=bin by
# default); the packages go to DIST (default dist/). nfpm, pinned below, is built once into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:?usage: packaging/build.sh VERSION}"
arches="${ARCHES:-amd64 arm64}"
packagers="${PACKAGERS:-deb rpm}"
dist="${DIST:-dist}"
export BINDIR="${BINDIR:-bin}"
go="${GO:-go}"

# Package managers need a version that starts with a digit and sorts: "v0.3.1" → "0.3.1",
# "v0.3.1-4-gabc1234" (git describe) → "0.3.1.4.gabc1234", which sorts after 0.3.1 and
# before 0.3.2; anything else (a bare commit such as "1a2b3c4-dirty", "dev") becomes
# "0.0.0+1a2b3c4.dirty".
if [[ "$version" =~ ^v?[0-9]+\.[0-9]+ ]]; then
  pkgversion="${version#v}"
else
  pkgversion="0.0.0+${version}"
fi
pkgversion="${pkgversion//[^A-Za-z0-9.+~]/.}"

# nfpm: the first of these versions that builds here. Installed into .tools/ (ignored by git)
# so that later runs do not rebuild it.
nfpm_versions="v2.45.2 v2.45.1 v2.46.0"
tools="$PWD/.tools"
nfpm=""
for v in $nfpm_versions; do
  if [ -x "$tools/nfpm-$v" ]; then nfpm="$tools/nfpm-$v"; break; fi
  echo "build: installing nfpm $v into .tools/"
  if GOBIN="$tools/tmp" "$go" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$v"; then
    mv "$tools/tmp/nfpm" "$tools/nfpm-$v"
    nfpm="$tools/nfpm-$v"
    break
  fi
  echo "build: nfpm $v did not build; trying the next version" >&2
done
rmdir "$tools/tmp" 2>/dev/null || true
[ -n "$nfpm" ] || { echo "build: error: no nfpm version in ($nfpm_versions) could be built" >&2; exit 1; }

targets=""
for arch in $arches; do targets="$targets linux/$arch"; done
TARGETS="$targets" packaging/release.sh "$version"

mkdir -p "$dist"
for arch in $arches; do
  for packager in $packagers; do
    echo "build: packaging blauth $pkgversion for $arch as $packager"
    VERSION="$pkgversion" GOARCH="$arch" "$nfpm" package \
      --config packaging/nfpm.yaml --packager "$packager" --target "$dist/"
  done
done
ls -l "$dist/"
