"""`mise run verify` at a reduced size: every fault once (kill -9 of each worker, a Postgres restart,
a Redis restart, a Redis flush, duplicate deliveries) under a load of intent runs and crash-demo
workflows, on the suite's own Postgres and Redis servers. It passes only if every fault recovered
within its target, every run ended as expected, no client request was lost and every duplicate oracle
is zero (ops/verify.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ops.processes import REPO

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def test_the_fault_suite_passes_at_a_reduced_size() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.verify",
            "--rounds",
            "1",
            "--min-runs",
            "40",
            "--clients",
            "4",
            "--seed",
            "11",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    faults = re.findall(
        r"^  (\S+) +n=1 down p50=\S+ recovery p50=\S+ max=\S+ target=\S+ -> ok$", out, re.MULTILINE
    )
    assert sorted(faults) == sorted(
        ["kill-intent", "kill-sbx", "pg-restart", "redis-restart", "redis-flush", "duplicates"]
    ), out
    [dupes] = re.findall(r"^duplicates: (.*)$", out, re.MULTILINE)
    assert all(v == "0" for v in re.findall(r"=(\d+)", dupes)), dupes
    assert re.search(r"^clients: .* lost=0 refused=0", out, re.MULTILINE), out
    assert "-> PASS" in out
