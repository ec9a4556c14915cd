#!/usr/bin/env bash
# Stop what ops/start.sh started (SIGTERM, then SIGKILL after 10 s).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
pidfile="$KODO_ROOT/.tmp/kodo-start.pid"
if [ ! -f "$pidfile" ]; then say "nothing to stop (no $pidfile)"; exit 0; fi
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  say "stopping kodo (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && { say "still running; SIGKILL"; pkill -KILL -P "$pid"; kill -KILL "$pid"; }
fi
rm -f "$pidfile"
say "stopped"
