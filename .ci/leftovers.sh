#!/usr/bin/env bash
# Tells which processes a CI step left running.
#
#   .ci/leftovers.sh snapshot FILE     record every process running now
#   .ci/leftovers.sh check FILE PID    list processes that are new since FILE, are not
#                                      descendants of PID (the CI script), and hang from init
#                                      through new processes only; fail if any
#
# A process a test started and did not stop outlives the test's process tree: it is reparented
# to init (or a new subreaper), so it is no longer below the CI script. Those are the ones
# listed. A new process below one that was already running (someone's shell on the same
# machine) was not started by the run and is left out. Processes that are still ending get two
# seconds to go.
set -euo pipefail

list() { ps -e -o pid= -o ppid= -o args= | awk '{ $1 = $1; print }'; }

case "${1:-}" in
snapshot)
  list | awk '{ print $1 }' | sort -n > "$2"
  ;;
check)
  before=$2 root=$3
  for attempt in 1 2 3 4 5; do
    left=$(list | awk -v root="$root" -v self="$$" '
      NR == FNR { seen[$1] = 1; next }
      { pid[$1] = $1; parent[$1] = $2; line[$1] = $0 }
      END {
        for (p in pid) {
          if (p in seen || p == self) continue
          # Below the CI script (or this check): still part of the run, not left behind. Below
          # a process older than the step: not started by the run.
          q = p; skip = 0
          for (i = 0; i < 64 && q != "" && q != 0 && q != 1; i++) {
            if (q == root || q == self || (q != p && q in seen)) { skip = 1; break }
            q = parent[q]
          }
          if (!skip) print line[p]
        }
      }' "$before" -)
    [ -n "$left" ] || exit 0
    sleep 0.5
  done
  echo "leftovers: these processes were started during the step and are still running:" >&2
  echo "$left" | sed 's/^/  /' >&2
  exit 1
  ;;
*)
  echo "usage: $0 snapshot FILE | check FILE PID" >&2
  exit 2
  ;;
esac
