#!/usr/bin/env bash
# Installs blauth from a source build (`make install`): the binaries, the service definitions
# for this OS, and the documentation, and prints every file it wrote.
#
#   packaging/install.sh DESTDIR PREFIX BINDIR
#
# DESTDIR may be empty (staged installs set it). BINDIR holds the built blauthd and
# blauth-helper. On Linux the systemd user units go to UNITDIR: by default
# ~/.local/share/systemd/user when PREFIX is ~/.local, PREFIX/lib/systemd/user when PREFIX is
# /usr or /usr/local (the user manager searches all three), and for any other PREFIX
# PREFIX/lib/systemd/user with the command that links them printed. Their ExecStart= and
# ExecReload= are rewritten to PREFIX/bin. On macOS the launchd agent goes to
# PREFIX/share/blauth/launchd/ with its paths rewritten the same way.
#
# Every file written is listed in PREFIX/share/blauth/installed-files, which
# packaging/uninstall.sh (`make uninstall`) reads to remove exactly those files.
set -euo pipefail
cd "$(dirname "$0")/.."

destdir="${1-}"
prefix="${2:?usage: packaging/install.sh DESTDIR PREFIX BINDIR}"
bindir="${3:?usage: packaging/install.sh DESTDIR PREFIX BINDIR}"
case "$prefix" in
  /*) ;;
  *) echo "install: error: PREFIX must be an absolute path, not '$prefix'" >&2; exit 2 ;;
esac
prefix="${prefix%/}"
for b in blauthd blauth-helper blauth-proxy; do
  [ -x "$bindir/$b" ] || { echo "install: error: $bindir/$b is missing; run 'make build' first" >&2; exit 1; }
done

root="$destdir$prefix"
manifest="$prefix/share/blauth/installed-files"
files=()

# put MODE SRC DEST: install one file (DEST is its final path, without DESTDIR).
put() {
  install -d "$destdir$(dirname "$3")"
  install -m "$1" "$2" "$destdir$3"
  files+=("$3")
}

put 0755 "$bindir/blauthd" "$prefix/bin/blauthd"
put 0755 "$bindir/blauth-helper" "$prefix/bin/blauth-helper"
put 0755 "$bindir/blauth-proxy" "$prefix/bin/blauth-proxy"
for doc in README.md LICENSE docs/*.md; do
  [ -e "$doc" ] && put 0644 "$doc" "$prefix/share/doc/blauth/$(basename "$doc")"
done

# sed replacement text: escape what sed would interpret.
esc_prefix=$(printf '%s' "$prefix" | sed 's/[&|\\]/\\&/g')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
next=()

case "$(uname -s)" in
  Linux)
    searched=no
    if [ -z "${UNITDIR-}" ]; then
      if [ -n "${HOME-}" ] && [ "$prefix" = "$HOME/.local" ]; then
        UNITDIR="$prefix/share/systemd/user"
        searched=yes
      else
        UNITDIR="$prefix/lib/systemd/user"
        case "$prefix" in /usr|/usr/local) searched=yes ;; esac
      fi
    fi
    sed -e "s|^ExecStart=/usr/bin/blauthd|ExecStart=$esc_prefix/bin/blauthd|" \
        -e "s|^ExecReload=/usr/bin/blauth-helper|ExecReload=$esc_prefix/bin/blauth-helper|" \
        systemd/blauthd.service > "$tmp/blauthd.service"
    grep -q "^ExecStart=$prefix/bin/blauthd " "$tmp/blauthd.service" ||
      { echo "install: error: could not point ExecStart= at $prefix/bin/blauthd" >&2; exit 1; }
    grep -q "^ExecReload=$prefix/bin/blauth-helper " "$tmp/blauthd.service" ||
      { echo "install: error: could not point ExecReload= at $prefix/bin/blauth-helper" >&2; exit 1; }
    sed -e "s|^ExecStart=/usr/bin/blauth-helper|ExecStart=$esc_prefix/bin/blauth-helper|" \
        "systemd/blauth-sink@.service" > "$tmp/blauth-sink@.service"
    grep -q "^ExecStart=$prefix/bin/blauth-helper sink " "$tmp/blauth-sink@.service" ||
      { echo "install: error: could not point the sink unit's ExecStart= at $prefix/bin/blauth-helper" >&2; exit 1; }
    put 0644 systemd/blauthd.socket "$UNITDIR/blauthd.socket"
    put 0644 "$tmp/blauthd.service" "$UNITDIR/blauthd.service"
    put 0644 "$tmp/blauth-sink@.service" "$UNITDIR/blauth-sink@.service"
    if [ "$searched" = yes ]; then
      next+=("systemctl --user daemon-reload && systemctl --user enable --now blauthd.socket")
    else
      # systemd does not look in this directory: link the units where it does.
      next+=("systemctl --user link $UNITDIR/blauthd.socket $UNITDIR/blauthd.service $UNITDIR/blauth-sink@.service"
        "systemctl --user daemon-reload && systemctl --user enable --now blauthd.socket")
    fi
    ;;
  Darwin)
    agentdir="$prefix/share/blauth/launchd"
    sed "s|/usr/local/bin/blauthd|$esc_prefix/bin/blauthd|g" packaging/launchd/dev.blauth.blauthd.plist > "$tmp/dev.blauth.blauthd.plist"
    put 0644 "$tmp/dev.blauth.blauthd.plist" "$agentdir/dev.blauth.blauthd.plist"
    next+=("cp $agentdir/dev.blauth.blauthd.plist ~/Library/LaunchAgents/"
      "launchctl bootstrap gui/\$(id -u) ~/Library/LaunchAgents/dev.blauth.blauthd.plist")
    ;;
esac

files+=("$manifest")
install -d "$destdir$(dirname "$manifest")"
printf '%s\n' "${files[@]}" > "$destdir$manifest"
chmod 0644 "$destdir$manifest"

echo "install: wrote these files:"
printf '  %s\n' "${files[@]/#/$destdir}"
echo "install: to start blauthd on first use:"
printf '  %s\n' "${next[@]}"
echo "install: 'make uninstall PREFIX=$prefix' removes every file above"
