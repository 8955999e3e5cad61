#!/usr/bin/env bash
# govulncheck against a vulnerability database built here from Go's own vulndb module (pinned),
# since the database's web address cannot be reached from every machine that runs CI.
#
#   .ci/vulncheck.sh [PACKAGES]     (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
vulndb=golang.org/x/vulndb@v0.0.0-20261105234957-e22db6528018
govulncheck=golang.org/x/vuln/cmd/govulncheck@v1.9.0

db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
dir=$(cd "$db" && GOFLAGS=-mod=mod go mod download -json "$vulndb" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/data/osv" ] || { echo "vulncheck: error: $vulndb has no data/osv" >&2; exit 1; }
go run "${vulndb%@*}/cmd/indexdb@${vulndb#*@}" -vulns "$dir/data/osv" -out "$db/db"
echo "vulncheck: $(ls "$dir/data/osv" | wc -l) advisories from $vulndb; $(go version)"
go run "$govulncheck" -db "file://$db/db" "${@:-./...}"
