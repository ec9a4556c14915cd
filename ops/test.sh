#!/usr/bin/env bash
# The one gate, locally and in CI: format check, lint, strict types, the import layers (import-linter
# contracts in pyproject.toml), then every test (unit, integration, chaos and e2e) against the real
# Postgres, Redis and Celery worker processes of this machine. Extra arguments go to pytest (e.g.
# ops/test.sh -k crash, ops/test.sh tests/e2e).
#
# KODO_LINT=0 skips format/lint/types/layers (the test:* tasks); KODO_TEST_SUITE and KODO_TEST_NEED_FILE
# are read by ops/testrun.py, which also maps the runbooks' test paths (test/e2e/x-y.test.ts ->
# tests/e2e/test_x_y.py) and turns "no test collected" into a failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$KODO_ROOT"
bootstrap dev
if [ "${KODO_LINT:-1}" != 0 ]; then
  say "ruff format --check"; "$VENV/bin/ruff" format --check .
  say "ruff check"; "$VENV/bin/ruff" check .
  say "mypy --strict"; "$VENV/bin/mypy"
  say "lint-imports"; "$VENV/bin/lint-imports" --no-cache
fi
say "pytest"
exec "$VENV/bin/python" -m ops.testrun "$@"
