#!/bin/sh
# blauth pre-remove (deb: "remove", "upgrade" or "deconfigure"; rpm: $1 = 0 on erase,
# 1 on upgrade). On a real removal, undo a `systemctl --global enable` an administrator may
# have done, so that no user manager is left with a dangling sockets.target.wants link. Per-user
# enablement lives in each home directory and is each user's to undo; running daemons are not
# stopped here, as root cannot do that cleanly for every user.
set -e
case "$1" in
  remove|purge|0) ;;
  *) exit 0 ;;
esac
if [ -L /etc/systemd/user/sockets.target.wants/blauthd.socket ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --global disable blauthd.socket || true
fi
cat <<'MSG'
blauth: removing. Users who enabled the daemon should run:
blauth:   systemctl --user disable --now blauthd.socket blauthd.service
MSG
exit 0
