#!/usr/bin/env bash
# Builds the real Ory Hydra OAuth 2.0 server used by internal/testkit/hydratest.
#
# Hydra lives in its own Go module (tools/hydra) so that its large dependency
# graph stays out of the main go.mod. It needs the sqlite build tag (cgo) for
# DSN=memory. The binary goes to <repo>/.tools/bin/hydra (gitignored).
#
# Idempotent: the build is skipped while the binary is newer than
# tools/hydra/go.sum. Set HYDRA_FORCE_BUILD=1 to rebuild anyway.
set -euo pipefail

root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))"
mod="$root/tools/hydra"
out="$root/.tools/bin/hydra"

if [[ "${HYDRA_FORCE_BUILD:-}" != "1" && -x "$out" && "$out" -nt "$mod/go.sum" && "$out" -nt "$mod/go.mod" ]]; then
	echo "hydra-build: $out is up to date (newer than tools/hydra/go.mod and go.sum); skipping"
	exit 0
fi

if ! command -v gcc >/dev/null 2>&1 && [[ -z "${CC:-}" ]]; then
	echo "hydra-build: a C compiler is required (cgo, -tags sqlite)" >&2
	exit 1
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

version="$(cd "$mod" && go list -m -f '{{.Version}}' github.com/ory/hydra/v2)"
echo "hydra-build: building github.com/ory/hydra/v2 $version (tools/hydra, -tags sqlite) -> $out"
start=$SECONDS
(cd "$mod" && CGO_ENABLED=1 go build -trimpath -tags sqlite \
	-ldflags "-X github.com/ory/hydra/v2/driver/config.Version=$version" \
	-o "$tmp" github.com/ory/hydra/v2)
mv -f "$tmp" "$out"
echo "hydra-build: done in $((SECONDS - start))s: $("$out" version 2>/dev/null | head -n 3 | tr '\n' ' ')"
