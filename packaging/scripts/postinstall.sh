#!/bin/sh
# blauth post-install (deb: "configure"; rpm: $1 = 1 on install, 2 on upgrade).
# Starts nothing: blauthd is a per-user daemon, and this script runs as root. Each user
# enables it for themselves; an administrator may enable it for every user at once with
# `systemctl --global enable blauthd.socket` (see OPERATIONS.md).
set -e
cat <<'MSG'
blauth: installed. To start the daemon for your user (it is socket-activated):
blauth:   systemctl --user daemon-reload
blauth:   systemctl --user enable --now blauthd.socket
blauth: after an upgrade, running daemons keep the old binary until:
blauth:   systemctl --user restart blauthd.service
blauth: see /usr/share/doc/blauth/OPERATIONS.md
MSG
exit 0
