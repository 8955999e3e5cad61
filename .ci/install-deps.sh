#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian machine: a Secret Service (gnome-keyring)
# and a session bus, the systemd tools (systemd-analyze, systemd-socket-activate), git, Python,
# Node, hyperfine for the benchmarks, and Docker and debootstrap for the suite that boots a real
# systemd user manager in a container (e2e/systemd). Idempotent; skips apt when everything is there.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have gnome-keyring-daemon || need+=(gnome-keyring)
have dbus-run-session || need+=(dbus dbus-x11)
have secret-tool || need+=(libsecret-tools)
have systemd-analyze || need+=(systemd)
have systemd-socket-activate || need+=(systemd)
have git || need+=(git)
have python3 || need+=(python3)
have node || need+=(nodejs)
have hyperfine || need+=(hyperfine)
have setpriv || need+=(util-linux)
have rpm || need+=(rpm)
have dockerd || need+=(docker.io)
have docker || need+=(docker.io)
have debootstrap || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for c in gnome-keyring-daemon dbus-run-session secret-tool systemd-analyze systemd-socket-activate git python3 node hyperfine setpriv rpm dpkg dockerd docker debootstrap; do
  have "$c" || { echo "install-deps: $c is still missing" >&2; exit 1; }
done
echo "install-deps: all present"
