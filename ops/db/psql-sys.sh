#!/usr/bin/env bash
# psql on the durability tables (schema dbos). kodo keeps app and dbos in one database, so this is the
# same database as psql-app.sh (SYS_DB_NAME, if set, wins for operators who split them).
# The search path is a connection option (PGOPTIONS), so `-tA -c "SELECT ..."` prints only the result.
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c search_path=dbos,public"
exec psql "${KODO_DATABASE_URL:-postgresql://${DB_USER:-postgres}@${DB_HOST:-127.0.0.1}:${DB_PORT:-5432}/${SYS_DB_NAME:-${APP_DB_NAME:-app_local}}}" \
  -v ON_ERROR_STOP=1 "$@"
