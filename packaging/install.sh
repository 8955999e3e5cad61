#!/usr/bin/env bash
# Installs blauth from a source build (`make install`): the binaries, the service definitions
# for this OS, and the documentation.
#
#   packaging/install.sh DESTDIR PREFIX BINDIR
#
# DESTDIR may be empty (staged installs set it). BINDIR holds the built blauthd and
# blauth-helper. On Linux the systemd user units go to UNITDIR, by default
# PREFIX/lib/systemd/user, or PREFIX/share/systemd/user when PREFIX is ~/.local (the user
# manager searches both); their ExecStart= and ExecReload= are rewritten to PREFIX/bin. On macOS the
# launchd agent goes to PREFIX/share/blauth/launchd/ with its paths rewritten the same way.
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
for b in blauthd blauth-helper; do
  [ -x "$bindir/$b" ] || { echo "install: error: $bindir/$b is missing; run 'make build' first" >&2; exit 1; }
done

root="$destdir$prefix"
install -d "$root/bin" "$root/share/doc/blauth"
install -m 0755 "$bindir/blauthd" "$bindir/blauth-helper" "$root/bin/"
install -m 0644 README.md LICENSE "$root/share/doc/blauth/"
for doc in docs/*.md; do
  [ -e "$doc" ] && install -m 0644 "$doc" "$root/share/doc/blauth/"
done
echo "install: binaries in $root/bin, documentation in $root/share/doc/blauth"

# sed replacement text: escape what sed would interpret.
esc_prefix=$(printf '%s' "$prefix" | sed 's/[&|\\]/\\&/g')

case "$(uname -s)" in
  Linux)
    if [ -z "${UNITDIR-}" ]; then
      if [ -n "${HOME-}" ] && [ "$prefix" = "$HOME/.local" ]; then
        UNITDIR="$prefix/share/systemd/user"
      else
        UNITDIR="$prefix/lib/systemd/user"
      fi
    fi
    install -d "$destdir$UNITDIR"
    install -m 0644 systemd/blauthd.socket "$destdir$UNITDIR/"
    sed -e "s|^ExecStart=/usr/bin/blauthd|ExecStart=$esc_prefix/bin/blauthd|" \
        -e "s|^ExecReload=/usr/bin/blauth-helper|ExecReload=$esc_prefix/bin/blauth-helper|" \
        systemd/blauthd.service > "$destdir$UNITDIR/blauthd.service"
    chmod 0644 "$destdir$UNITDIR/blauthd.service"
    grep -q "^ExecStart=$prefix/bin/blauthd " "$destdir$UNITDIR/blauthd.service" ||
      { echo "install: error: could not point ExecStart= at $prefix/bin/blauthd" >&2; exit 1; }
    grep -q "^ExecReload=$prefix/bin/blauth-helper " "$destdir$UNITDIR/blauthd.service" ||
      { echo "install: error: could not point ExecReload= at $prefix/bin/blauth-helper" >&2; exit 1; }
    echo "install: user units in $destdir$UNITDIR"
    echo "install: enable with: systemctl --user daemon-reload && systemctl --user enable --now blauthd.socket"
    ;;
  Darwin)
    agentdir="$root/share/blauth/launchd"
    install -d "$agentdir"
    sed "s|/usr/local/bin/blauthd|$esc_prefix/bin/blauthd|g" packaging/launchd/dev.blauth.blauthd.plist \
      > "$agentdir/dev.blauth.blauthd.plist"
    chmod 0644 "$agentdir/dev.blauth.blauthd.plist"
    echo "install: launchd agent in $agentdir; load it with:"
    echo "  cp $prefix/share/blauth/launchd/dev.blauth.blauthd.plist ~/Library/LaunchAgents/"
    echo "  launchctl bootstrap gui/\$(id -u) ~/Library/LaunchAgents/dev.blauth.blauthd.plist"
    ;;
esac
