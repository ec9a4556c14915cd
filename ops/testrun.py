"""`python -m ops.testrun [pytest args]`: run pytest the way the mise test tasks and ops/test.sh do.

What it adds to plain pytest:

* **Runbook paths.** The runbooks name the original's test files (`test/e2e/run-view-golden.test.ts`,
  `test/integration/queue-rate-limit.test.ts`). Such an argument is mapped to kodo's file of the same
  scenario (`tests/e2e/test_run_view_golden.py`, `tests/integration/test_queue_rate_limit.py`): `test/`
  becomes `tests/`, and `name-with-dashes.test.ts` becomes `test_name_with_dashes.py`. Python paths
  (`tests/e2e/test_api_shim.py::test_x`) pass unchanged.
* **Suites.** `KODO_TEST_SUITE=tests/e2e` runs that directory when no path is given, and
  `KODO_TEST_NEED_FILE=1` (the `*:file` tasks) refuses to run without one.
* **No test is a failure.** pytest's exit 5 (nothing collected) becomes 1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Suffixes of the original's test files (vitest), longest first.
_TS_SUFFIXES = (".test.ts", ".spec.ts", ".test.js", ".spec.js", ".ts", ".js")
NO_TESTS_COLLECTED = 5
USAGE = 2


class UsageError(Exception):
    """The task was called without what it needs (a `*:file` task without a file)."""


def looks_like_path(arg: str) -> bool:
    """A test path or node id, as opposed to an option (`-k`) or an option's value (`not chaos`)."""
    if arg.startswith("-") or " " in arg:
        return False
    path = arg.partition("::")[0]
    return "/" in path or path.endswith((".py", *_TS_SUFFIXES))


def map_path(arg: str) -> str:
    """The kodo test file of a runbook path; a Python path (or node id) comes back unchanged."""
    path, sep, node = arg.partition("::")
    path = path.removeprefix("./")
    if path == "test" or path.startswith("test/"):
        path = "tests" + path[len("test") :]
    head, base = os.path.split(path)
    for suffix in _TS_SUFFIXES:
        if base.endswith(suffix):
            stem = re.sub(r"[^0-9A-Za-z]+", "_", base[: -len(suffix)]).strip("_").lower()
            base = stem if stem.startswith("test_") else f"test_{stem}"
            base += ".py"
            break
    return os.path.join(head, base) + sep + node


def pytest_args(argv: Sequence[str], suite: str | None, need_file: bool) -> list[str]:
    """pytest's arguments: runbook paths mapped, the suite added when no path was given."""
    args = [map_path(a) if looks_like_path(a) else a for a in argv]
    paths = [a for a in args if looks_like_path(a)]
    if need_file and not paths:
        raise UsageError(f"give a test file, e.g. {suite or 'tests'}/test_x.py (runbook paths work too)")
    if suite and not paths:
        args.append(suite)
    return args


def _check_paths(args: Sequence[str], suite: str | None) -> None:
    """Say clearly which file is missing (pytest alone says only 'file or directory not found')."""
    for arg in args:
        if not looks_like_path(arg):
            continue
        path = arg.partition("::")[0]
        if not (REPO / path).exists():
            where = REPO / (suite or os.path.dirname(path) or "tests")
            have = sorted(p.name for p in where.glob("test_*.py")) if where.is_dir() else []
            print(
                f"[kodo] no test file {path}; {where.relative_to(REPO)} has: {', '.join(have)}",
                file=sys.stderr,
            )


def main(argv: Sequence[str] | None = None) -> int:
    suite = os.environ.get("KODO_TEST_SUITE", "").strip() or None
    need_file = os.environ.get("KODO_TEST_NEED_FILE", "").strip() in ("1", "true")
    try:
        args = pytest_args(list(sys.argv[1:] if argv is None else argv), suite, need_file)
    except UsageError as exc:
        print(f"[kodo] usage: {exc}", file=sys.stderr)
        return USAGE
    _check_paths(args, suite)
    env = {k: v for k, v in os.environ.items() if k not in ("KODO_TEST_SUITE", "KODO_TEST_NEED_FILE")}
    print(f"[kodo] pytest {' '.join(args)}", file=sys.stderr, flush=True)
    rc = subprocess.call([sys.executable, "-m", "pytest", *args], cwd=REPO, env=env)
    if rc == NO_TESTS_COLLECTED:
        print("[kodo] pytest collected no tests: that is a failure", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
