#!/usr/bin/env bash
# mise run test:unit:soak: the unit tests TIMES (50) times in a row, stopping at the first failing
# round (format, lint and types on the first round only).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${TIMES:-50}"
for i in $(seq 1 "$n"); do
    echo "[test:unit:soak] round $i/$n"
    lint=0
    [ "$i" = 1 ] && lint="${KODO_LINT:-1}"
    if ! KODO_LINT="$lint" bash ops/test.sh tests/unit -q -p no:randomly; then
        echo "[test:unit:soak] FAILED in round $i/$n"
        exit 1
    fi
done
echo "[test:unit:soak] $n rounds passed"
