#!/usr/bin/env bash
# Stop what ops/start.sh started (every process set: monolith, worker, shim): SIGTERM, then SIGKILL
# after 10 s. Only processes started through ops/start.sh are touched (by their recorded pid, ops.pidfiles).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [ ! -x "$VENV/bin/python" ]; then
  say "nothing to stop (no .venv, so no .tmp/kodo-start.*.pid)"
  exit 0
fi
cd "$KODO_ROOT" && exec "$VENV/bin/python" -m ops.pidfiles stop
