#!/usr/bin/env bash
# A private Docker engine for one test suite, as root, that shares nothing with any other engine
# on the machine (another suite may run its own at the same time with another DIR).
#
#   .ci/dockerd.sh start DIR   # starts dockerd with everything under DIR; prints the DOCKER_HOST
#   .ci/dockerd.sh stop DIR    # removes its containers, ends it, unmounts and removes what it made
#
# Under DIR: docker.sock (its API), data/ (images, containers), exec/ (its containerd and runtime
# state), pid, dockerd.log, daemon.json (its configuration, so that /etc/docker/daemon.json is
# not read), key.json (its identity key, else written to /etc/docker). No network of its own: --bridge=none, no iptables, no forwarding; containers use
# --network none or --network host. Nothing is pulled: images are built or imported locally.
# DIR must be short (the containerd socket path lives under it and Unix socket paths are limited
# to 107 bytes). Every wait is bounded; a failure prints the engine's log and exits non-zero.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
fail() { echo "dockerd.sh: error: $*" >&2; exit 1; }

sock="$dir/docker.sock"
export DOCKER_HOST="unix://$sock"

dk() { local t=$1; shift; timeout "$t" docker "$@"; }   # dk SECONDS ARGS...

start() {
  command -v dockerd >/dev/null || fail "dockerd is not installed (apt-get install docker.io, or run .ci/install-deps.sh)"
  command -v docker >/dev/null || fail "the docker client is not installed (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || fail "dockerd must run as root"
  [ ${#sock} -lt 80 ] || fail "DIR is too long for the engine's sockets: $dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    fail "a dockerd already runs for $dir (pid $(cat "$dir/pid")); stop it first"
  fi
  if [ ! -d "$dir" ]; then
    mkdir -p -m 0700 "$dir"
    : >"$dir/.made-by-dockerd.sh"   # stop removes DIR itself only when start made it
  fi
  mkdir -p -m 0700 "$dir/data" "$dir/exec"
  # The engine's identity key goes under DIR too, not /etc/docker/key.json.
  printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"
  # setsid: the engine must not get the caller's terminal signals; the caller stops it with stop.
  setsid dockerd \
    --host "unix://$sock" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/pid" \
    --config-file "$dir/daemon.json" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --log-level=warn \
    </dev/null >"$dir/dockerd.log" 2>&1 &
  local pid=$!
  local i
  for i in $(seq 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$dir/dockerd.log" >&2
      fail "dockerd exited during start-up"
    fi
    if [ -S "$sock" ] && dk 10 info >/dev/null 2>&1; then
      echo "$DOCKER_HOST"
      return 0
    fi
    sleep 0.2
  done
  cat "$dir/dockerd.log" >&2
  kill "$pid" 2>/dev/null || true
  fail "dockerd did not answer within 30 s"
}

stop() {
  [ -d "$dir" ] || return 0
  local pid=""
  [ -f "$dir/pid" ] && pid=$(cat "$dir/pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Containers first, while the engine can still remove them cleanly.
    local ids
    ids=$(dk 20 ps -aq 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      dk 60 rm -f -v $ids >/dev/null 2>&1 || echo "dockerd.sh: warning: could not remove containers $ids" >&2
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd.sh: warning: dockerd (pid $pid) did not stop within 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Whatever the engine left: its containerd, shims and container processes are found by the
  # exec root in their command lines (never by name: another suite's engine must live on).
  local left
  for i in $(seq 50); do
    left=$(pgrep -f -- "$dir/exec" || true)
    [ -z "$left" ] && break
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null || true
    sleep 0.2
  done
  left=$(pgrep -f -- "$dir/exec" || true)
  # shellcheck disable=SC2086
  [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
  # Mounts under DIR (overlay layers, the containers' shm), deepest first.
  local m
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # The engines' parent cgroup, if no engine uses it any more (rmdir refuses a cgroup that is not
  # empty, so another suite's engine keeps its own).
  for cg in /sys/fs/cgroup/docker /sys/fs/cgroup/*/docker; do
    [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  done
  # The plugin directory every engine makes in /run, once no engine is left to look in it.
  if ! pgrep -x dockerd >/dev/null; then
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
  fi
  rm -rf "$dir/data" "$dir/exec" "$dir/pid" "$dir/docker.sock" "$dir/daemon.json" "$dir/dockerd.log" "$dir/key.json"
  if [ -f "$dir/.made-by-dockerd.sh" ]; then
    rm -f "$dir/.made-by-dockerd.sh"
    rmdir "$dir" 2>/dev/null || echo "dockerd.sh: warning: $dir is not empty; left in place" >&2
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
