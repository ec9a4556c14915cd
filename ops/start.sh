#!/usr/bin/env bash
# Start the whole system on embedded defaults: API (PORT, 3001), admin + reconciler (ADMIN_PORT, 3002),
# Celery workers for intentQ+controlQ and sbxQ, and Flower (FLOWER_PORT, 5555). Ctrl-C stops it all.
# KODO_PROCESSES picks a subset of the Procfile (split topology): `intent sbx reconciler` is the
# worker side (`mise run start:worker`), `api` the shim (`mise run start:api-shim`).
# The processes run under supervisord (configuration generated from the Procfile by ops/procfile.py):
# one that dies is restarted (with backoff if it keeps dying at start) and never stops the others.
# KODO_RUN_DIR (default .tmp) holds the pid file, supervisord's configuration, socket and logs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$KODO_ROOT"
bootstrap dev
"$VENV/bin/python" -m ops migrate
export KODO_API_PORT="${PORT:-3001}" KODO_ADMIN_PORT="${ADMIN_PORT:-3002}" KODO_FLOWER_PORT="${FLOWER_PORT:-5555}"
RUN_DIR="${KODO_RUN_DIR:-$KODO_ROOT/.tmp}"
processes="${KODO_PROCESSES:-}"
role="${processes:-all}"
role="${role// /-}"
# Step-duration histograms of every worker process, added up by the admin server's /metrics
# (prometheus_client's multiprocess mode): one directory per process set, emptied at each start.
if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  export PROMETHEUS_MULTIPROC_DIR="$RUN_DIR/metrics.$role"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
fi
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
case " ${processes:-api} " in *" api "*) say "API http://127.0.0.1:$KODO_API_PORT" ;; esac
case " ${processes:-reconciler} " in *" reconciler "*) say "admin http://127.0.0.1:$KODO_ADMIN_PORT (/healthz, /queues, /metrics)" ;; esac
case " ${processes:-flower} " in *" flower "*) say "flower http://127.0.0.1:$KODO_FLOWER_PORT" ;; esac
# Each process logs warnings, errors and its start-up lines; the lines per request and per task are off
# unless asked for (see the Procfile's header).
say "logs: KODO_ACCESS_LOG=1 adds the API's access log, KODO_TASK_LOG=1 the workers' per-task lines"
say "status: mise run status (supervisorctl -c $RUN_DIR/supervisord.$role.conf status)"
# ops.procfile writes $RUN_DIR/supervisord.$role.conf, records this pid (one file per process set:
# $RUN_DIR/kodo-start.$role.pid, what ops/stop.sh stops), then execs supervisord in the foreground.
# shellcheck disable=SC2086  # KODO_PROCESSES is a list of names
exec "$VENV/bin/python" -m ops.procfile supervise "$role" $processes
