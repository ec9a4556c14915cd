#!/usr/bin/env bash
# Stop what ops/start.sh started (every process set: monolith, worker, shim): SIGTERM, then SIGKILL
# after 10 s. Only processes started through ops/start.sh are touched (by their recorded pid).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
shopt -s nullglob
pidfiles=("$KODO_ROOT"/.tmp/kodo-start.pid "$KODO_ROOT"/.tmp/kodo-start.*.pid)
found=0
for pidfile in "${pidfiles[@]}"; do
  [ -f "$pidfile" ] || continue
  found=1
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping kodo (pid $pid, $(basename "$pidfile"))"
    kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      say "still running; SIGKILL"
      pkill -KILL -P "$pid"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$pidfile"
done
[ "$found" = 1 ] || say "nothing to stop (no .tmp/kodo-start.*.pid)"
say "stopped"
