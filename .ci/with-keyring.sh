#!/usr/bin/env bash
# with-keyring.sh CMD [ARGS...]
#
# Runs CMD with a real, fresh and unlocked Secret Service (gnome-keyring) on a private D-Bus
# session bus, so that blauth's keyring code can be tested headless (CI, containers, ssh):
#
#   .ci/with-keyring.sh go test -tags real ./sources/keyring/ -run Keyring -v
#
# CMD gets a temporary HOME (and XDG_DATA_HOME, XDG_RUNTIME_DIR) so that the keyring never opens,
# or writes to, the real user's login keyring. Go's build and module caches and its settings file
# are kept by exporting GOCACHE, GOMODCACHE, GOPATH and GOENV first. BLAUTH_TEST_KEYRING_HOME is
# set to the temporary HOME: the real-keyring tests refuse to run without it.
#
# Needs: dbus-run-session (dbus), gnome-keyring-daemon (gnome-keyring), dbus-send; secret-tool
# (libsecret-tools) for the tests that inspect items. Reads nothing from stdin. Exits with CMD's
# status, or 125 when the keyring cannot be set up. The temporary directory is removed.
set -euo pipefail

me=with-keyring.sh
password=blauth-ci # protects a throwaway keyring that is deleted on exit

die() {
	echo "$me: error: $1" >&2
	[ $# -lt 2 ] || echo "$me: hint: $2" >&2
	exit 125
}

# dbus_call DEST PATH METHOD ARGS...: one session-bus method call, the reply on stdout.
dbus_call() {
	local dest=$1 path=$2 method=$3
	shift 3
	dbus-send --session --print-reply=literal --reply-timeout=2000 --dest="$dest" "$path" "$method" "$@"
}

# Stage two runs inside dbus-run-session: start and unlock the keyring, check it, run CMD.
if [ "${_BLAUTH_WITH_KEYRING_STAGE:-}" = inner ]; then
	unset _BLAUTH_WITH_KEYRING_STAGE
	# The daemon reads the login keyring's password on stdin, creates that keyring when it does
	# not exist, and prints variables to set (none with only the secrets component, today).
	eval "$(printf '%s' "$password" | gnome-keyring-daemon --unlock --components=secrets)"
	export GNOME_KEYRING_CONTROL SSH_AUTH_SOCK 2>/dev/null || true

	# Wait until the daemon owns org.freedesktop.secrets. GetConnectionUnixProcessID does not
	# auto-start a service, so a second (locked) daemon cannot be activated by this check.
	pid=
	deadline=$((SECONDS + 10))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if reply=$(dbus_call org.freedesktop.DBus /org/freedesktop/DBus \
			org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets 2>/dev/null); then
			pid=$(echo "$reply" | awk '{print $2}')
			break
		fi
		sleep 0.1
	done
	[ -n "$pid" ] || die "org.freedesktop.secrets did not appear on the session bus within 10s" \
		"run 'dbus-run-session -- gnome-keyring-daemon --unlock --components=secrets --foreground' to see why"

	locked=$(dbus_call org.freedesktop.secrets /org/freedesktop/secrets/collection/login \
		org.freedesktop.DBus.Properties.Get string:org.freedesktop.Secret.Collection string:Locked 2>&1) ||
		die "the Secret Service does not answer: $locked"
	case $locked in
	*false*) ;;
	*) die "the login collection is locked or missing: $locked" ;;
	esac

	status=0
	"$@" || status=$?

	# The daemon would exit with the bus; stop it now so it writes nothing into HOME while the
	# outer stage removes it.
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
		[ "$state" != Z ] || break
		sleep 0.1
	done
	exit "$status"
fi

# Stage one: check the tools, keep Go's caches, make the temporary home, re-run under a bus.
[ $# -gt 0 ] || {
	echo "usage: $me CMD [ARGS...]" >&2
	exit 2
}
for tool in dbus-run-session dbus-daemon dbus-send gnome-keyring-daemon; do
	command -v "$tool" >/dev/null ||
		die "$tool not found" "apt-get install gnome-keyring dbus libsecret-tools"
done

if command -v go >/dev/null; then
	GOCACHE=$(go env GOCACHE)
	GOMODCACHE=$(go env GOMODCACHE)
	GOPATH=$(go env GOPATH)
	GOENV=$(go env GOENV)
	export GOCACHE GOMODCACHE GOPATH GOENV
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/blauth-keyring.XXXXXX")
cleanup() {
	# A daemon may still be exiting: retry briefly rather than leave the directory behind.
	for _ in 1 2 3 4 5; do
		rm -rf -- "$tmp" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "$me: warning: could not remove $tmp" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -m 0700 "$tmp/home" "$tmp/run"
export HOME="$tmp/home"
export XDG_DATA_HOME="$tmp/home/.local/share"
export XDG_CONFIG_HOME="$tmp/home/.config"
export XDG_RUNTIME_DIR="$tmp/run"
export BLAUTH_TEST_KEYRING_HOME="$HOME"
unset GNOME_KEYRING_CONTROL

status=0
_BLAUTH_WITH_KEYRING_STAGE=inner dbus-run-session -- bash "${BASH_SOURCE[0]}" "$@" || status=$?
exit "$status"
