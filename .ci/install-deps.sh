#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian machine: a Secret Service (gnome-keyring)
# and a session bus, the systemd tools (systemd-analyze, systemd-socket-activate), git, Python
# (with Debian's python3-httpx and python3-prometheus-client), Node and npm, hyperfine for the
# benchmarks, Docker and debootstrap for the suites that boot containers (e2e/systemd, e2e/remote),
# OpenSSH's server and client (e2e/remote), and the pinned Node packages of the end-to-end
# suites (e2e/node, from its package-lock.json). Idempotent; skips apt when everything is
# there, and npm when e2e/node/node_modules matches the lock file.
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
have npm || need+=(npm)
have hyperfine || need+=(hyperfine)
have setpriv || need+=(util-linux)
have rpm || need+=(rpm)
have dockerd || need+=(docker.io)
have docker || need+=(docker.io)
have debootstrap || need+=(debootstrap)
# A real OpenSSH server and client for e2e/remote's forwarding test.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have ssh || need+=(openssh-client)
have ssh-keygen || need+=(openssh-client)
# The Prometheus project's own text-format parser (its Python client), for the metrics test.
/usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null || need+=(python3-prometheus-client)
# httpx for Debian's own python3: e2e/clients drives the Python client's Blaxel SDK adapter with it.
/usr/bin/python3 -c 'import httpx' >/dev/null 2>&1 || need+=(python3-httpx)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for c in gnome-keyring-daemon dbus-run-session secret-tool systemd-analyze systemd-socket-activate git python3 node npm hyperfine setpriv rpm dpkg dockerd docker debootstrap ssh ssh-keygen; do
  have "$c" || { echo "install-deps: $c is still missing" >&2; exit 1; }
done
[ -x /usr/sbin/sshd ] || { echo "install-deps: /usr/sbin/sshd (openssh-server) is still missing" >&2; exit 1; }
/usr/bin/python3 -c 'import prometheus_client.parser' || { echo "install-deps: python3-prometheus-client is still missing" >&2; exit 1; }
/usr/bin/python3 -c 'import httpx' >/dev/null 2>&1 || { echo "install-deps: httpx for /usr/bin/python3 is still missing" >&2; exit 1; }

# The real Blaxel TypeScript SDK, the MCP SDK and the MCP Inspector's CLI, exactly as locked.
# npm ci replaces node_modules; it runs only when node_modules is missing or was installed from
# another lock.
# No package's install scripts run (--ignore-scripts): none of these needs one.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/e2e/node"
stamp="$node_dir/node_modules/.blauth-lock.sha256"
want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install-deps: npm ci in e2e/node"
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) || {
    echo "install-deps: npm ci in e2e/node failed (is the npm registry reachable?)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "install-deps: all present"
