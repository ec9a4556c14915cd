#!/usr/bin/env bash
# Stop what ops/start.sh started (every process set: monolith, worker, shim): SIGTERM to its
# supervisord, which stops every program's process group (SIGKILL after 10 s); whatever is left after
# 15 s, process groups included, is killed. Only processes started through ops/start.sh are touched
# (by their recorded pid, ops.pidfiles; KODO_RUN_DIR as start.sh had it).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [ ! -x "$VENV/bin/python" ]; then
  say "nothing to stop (no .venv, so no .tmp/kodo-start.*.pid)"
  exit 0
fi
cd "$KODO_ROOT" && exec "$VENV/bin/python" -m ops.pidfiles stop
