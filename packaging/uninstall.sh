#!/usr/bin/env bash
# Removes what packaging/install.sh installed under DESTDIR PREFIX (`make uninstall`): exactly
# the files its manifest, PREFIX/share/blauth/installed-files, lists, and the directories that
# are left empty. It stops and disables nothing: it says what to run first if the units are in use.
#
#   packaging/uninstall.sh DESTDIR PREFIX
set -euo pipefail
destdir="${1-}"
prefix="${2:?usage: packaging/uninstall.sh DESTDIR PREFIX}"
prefix="${prefix%/}"
manifest="$destdir$prefix/share/blauth/installed-files"
[ -f "$manifest" ] || { echo "uninstall: error: $manifest is missing: nothing was installed under $prefix by 'make install'" >&2; exit 1; }
if command -v systemctl >/dev/null 2>&1 && systemctl --user is-enabled blauthd.socket >/dev/null 2>&1; then
  echo "uninstall: blauthd.socket is enabled: run 'systemctl --user disable --now blauthd.socket blauthd.service' too"
fi
while IFS= read -r f; do
  case "$f" in "$prefix"/*) ;; *) echo "uninstall: error: $f in the manifest is outside $prefix; stopping" >&2; exit 1 ;; esac
  if [ -e "$destdir$f" ] || [ -L "$destdir$f" ]; then
    rm -f "$destdir$f"
    echo "uninstall: removed $destdir$f"
  fi
  # The directories install made under PREFIX, once empty; never PREFIX itself or above.
  d=$(dirname "$f")
  while [ "$d" != "$prefix" ] && [ "${d#"$prefix"/}" != "$d" ]; do
    rmdir "$destdir$d" 2>/dev/null || break
    d=$(dirname "$d")
  done
done < <(cat "$manifest")
