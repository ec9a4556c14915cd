#!/usr/bin/env bash
# psql on kodo's database, schema app first on the search path (the runbooks' sql_app helper).
# The search path is a connection option (PGOPTIONS), so `-tA -c "SELECT ..."` prints only the result.
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c search_path=app,public"
exec psql "${KODO_DATABASE_URL:-postgresql://${DB_USER:-postgres}@${DB_HOST:-127.0.0.1}:${DB_PORT:-5432}/${APP_DB_NAME:-app_local}}" \
  -v ON_ERROR_STOP=1 "$@"
