#!/usr/bin/env bash
# The one gate, locally and in CI: format check, lint, strict types, then every test (integration and
# chaos) against the real Postgres, Redis and Celery worker processes of this machine.
# Extra arguments go to pytest (e.g. ops/test.sh -k crash).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$KODO_ROOT"
bootstrap dev
say "ruff format --check"; "$VENV/bin/ruff" format --check .
say "ruff check"; "$VENV/bin/ruff" check .
say "mypy --strict"; "$VENV/bin/mypy"
say "pytest"
set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then say "pytest collected no tests: that is a failure"; exit 1; fi
exit "$rc"
