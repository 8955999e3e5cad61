#!/usr/bin/env bash
# Fails when git tracks build output: a compiled executable (ELF, Mach-O or PE, whatever its
# mode) or any file over 1 MiB. Scripts are source and may be executable. Run by make lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  size=$(stat -c %s "$f")
  if [ "$size" -gt 1048576 ]; then
    echo "tracked: $f is $size bytes, over 1 MiB: build output or data does not belong in git" >&2
    bad=1
  fi
  magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
  7f454c46 | cffaedfe | cefaedfe | feedfacf | feedface | cafebabe | 4d5a9000)
    echo "tracked: $f is a compiled executable: add it to .gitignore and git rm --cached it" >&2
    bad=1
    ;;
  esac
done < <(git ls-files -z)
exit "$bad"
