#!/bin/sh
# blauth post-install (deb: "configure", with the old version in $2 on an upgrade; rpm: $1 = 1 on
# install, 2 on upgrade).
#
# A first install starts nothing: blauthd is a per-user daemon, and this script runs as root. Each
# user enables it for themselves; an administrator may enable it for every user at once with
# `systemctl --global enable blauthd.socket` (see OPERATIONS.md).
#
# An upgrade restarts the daemons that are running, in every running user manager, so that no one
# keeps serving credentials from the replaced binary (which may be the one a security fix
# replaced). Clients do not notice: the socket stays with systemd, connections made meanwhile
# wait in its queue, and a stopping daemon finishes the requests in flight. Each user manager is
# first told to re-read its unit files. A user manager that does not answer is skipped with a
# message; nothing here fails the package.
set -e

upgrade=no
case "$1" in
  configure) [ -n "$2" ] && upgrade=yes ;;
  2) upgrade=yes ;;
esac

if [ "$upgrade" = no ]; then
  cat <<'MSG'
blauth: installed. To start the daemon for your user (it is socket-activated):
blauth:   systemctl --user daemon-reload
blauth:   systemctl --user enable --now blauthd.socket
blauth: see /usr/share/doc/blauth/OPERATIONS.md
MSG
  exit 0
fi

# No systemd as init (a container, a chroot): nothing runs that could be restarted.
if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1 || ! command -v runuser >/dev/null 2>&1; then
  echo "blauth: upgraded; running daemons, if any, keep the old binary until: systemctl --user restart blauthd.service"
  exit 0
fi

restarted=""
for unit in $(systemctl list-units --type=service --state=running --no-legend --plain 'user@*.service' 2>/dev/null | awk '{ print $1 }'); do
  uid=${unit#user@}
  uid=${uid%.service}
  case "$uid" in '' | *[!0-9]*) continue ;; esac
  name=$(getent passwd "$uid" | cut -d: -f1)
  [ -n "$name" ] || continue
  # The user's own manager, reached as the user through its private socket in /run/user/UID.
  as_user() {
    limit=$1
    shift
    timeout "$limit" runuser -u "$name" -- env XDG_RUNTIME_DIR="/run/user/$uid" "$@"
  }
  # is-active succeeds when either unit is active: blauth is in use by this user.
  as_user 10 systemctl --user is-active --quiet blauthd.socket blauthd.service 2>/dev/null || continue
  if ! as_user 30 systemctl --user daemon-reload; then
    echo "blauth: warning: the user manager of $name did not reload its units; they run: systemctl --user daemon-reload && systemctl --user restart blauthd.service" >&2
    continue
  fi
  if as_user 10 systemctl --user is-active --quiet blauthd.service 2>/dev/null; then
    if as_user 60 systemctl --user restart blauthd.service; then
      restarted="$restarted $name"
    else
      echo "blauth: warning: could not restart the daemon of $name; they run: systemctl --user restart blauthd.service" >&2
    fi
  fi
done
if [ -n "$restarted" ]; then
  echo "blauth: upgraded; restarted the running daemon of:$restarted"
else
  echo "blauth: upgraded; no daemon was running"
fi
exit 0
