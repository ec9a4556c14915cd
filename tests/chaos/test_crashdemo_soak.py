"""The crash demo soak (`python -m ops.crashdemo --kill-point random`) as a real subprocess.

Three rounds against the test database and broker (tests/conftest.py BASE_ENV), each with the real
API (gunicorn), a Celery worker and the reconciler/admin process, killed with kill -9 at a random
point (seeded so the three rounds cover sleep, step and committed) and restarted. The command must
exit 0 and report every round converged ({s1:1, s2:1}, SUCCESS, ops mark/sleep/mark).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ops import crashdemo, processes

pytestmark = pytest.mark.chaos

ROUNDS = 3
# The soak's own bar is a 5 s median over 20 rounds (`mise run wf:crashdemo:soak`); recovery includes
# restarting processes, so on a loaded test machine three rounds get more room. Convergence is exact.
MAX_MEDIAN_S = 10.0


def _seed_covering_every_kill_point() -> int:
    return next(
        s
        for s in range(1000)
        if sorted(crashdemo.plan_kill_points("random", ROUNDS, s)) == sorted(crashdemo.KILL_POINTS)
    )


def test_crashdemo_soak_converges_every_round() -> None:
    seed = _seed_covering_every_kill_point()
    port, admin_port = processes.free_port(), processes.free_port()
    argv = [
        sys.executable, "-m", "ops.crashdemo", "--rounds", str(ROUNDS), "--kill-point", "random",
        "--seed", str(seed), "--sleep-ms", "1000", "--port", str(port), "--admin-port", str(admin_port),
        "--max-median-recovery", str(MAX_MEDIAN_S),
    ]  # fmt: skip
    env = processes.child_env(os.environ)  # APP_DB_NAME=kodo_test, broker redis db 15 (conftest)
    done = subprocess.run(
        argv, cwd=processes.REPO, env=env, capture_output=True, text=True, timeout=170, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out

    lines = [ln for ln in done.stdout.splitlines() if re.match(r"round \d+/\d+ ", ln)]
    assert len(lines) == ROUNDS, out
    assert all(ln.endswith(" converged") for ln in lines), out
    assert all('marks={"s1":1,"s2":1} status=SUCCESS' in ln for ln in lines), out
    assert {m.group(1) for ln in lines if (m := re.search(r" kill=(\w+) ", ln))} == set(crashdemo.KILL_POINTS)
    summary = [ln for ln in done.stdout.splitlines() if ln.startswith("summary:")]
    assert len(summary) == 1, out
    assert f"converged={ROUNDS}/{ROUNDS}" in summary[0], out
    median = re.search(r"recovery_median=([\d.]+)s", summary[0])
    assert median is not None and float(median.group(1)) < MAX_MEDIAN_S, summary[0]
    assert summary[0].endswith("PASS"), out
