#!/usr/bin/env bash
# Start the whole system on embedded defaults: API (PORT, 3001), admin + reconciler (ADMIN_PORT, 3002),
# Celery workers for intentQ+controlQ and sbxQ, and Flower (FLOWER_PORT, 5555). Ctrl-C stops it all.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$KODO_ROOT"
bootstrap dev
"$VENV/bin/python" -m ops migrate
export KODO_API_PORT="${PORT:-3001}" KODO_ADMIN_PORT="${ADMIN_PORT:-3002}" KODO_FLOWER_PORT="${FLOWER_PORT:-5555}"
say "API http://127.0.0.1:$KODO_API_PORT  admin http://127.0.0.1:$KODO_ADMIN_PORT  flower http://127.0.0.1:$KODO_FLOWER_PORT"
echo $$ > .tmp/kodo-start.pid
exec "$VENV/bin/honcho" -f "${KODO_PROCFILE:-Procfile}" start ${KODO_PROCESSES:-}
