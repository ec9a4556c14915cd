#!/usr/bin/env bash
# Sandbox task percentiles from SQL (the runbooks' scripts/sbx-perf-report.sh): p50/p95/p99 wall,
# p95 CPU and max memory of every sandbox attempt (app.sbx_runs), and p50/p95/p99/max queue wait,
# run and total time of the sbxQ tasks (dbos.workflow_status), for the runs whose id starts with one
# of the arguments (none: every run). `ops/sbx-perf-report.sh run_` is the runbooks' call; --help,
# --json. It is `python -m ops.sbxperf` on the environment's database (APP_DB_NAME).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$KODO_ROOT" && exec "$VENV/bin/python" -m ops.sbxperf "$@"
