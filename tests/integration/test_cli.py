"""The operator CLI (`python -m ops`) against the real database: it prints JSON or lines, exits 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.support import workflows as t
from tests.support.procs import REPO


def ops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        check=False,
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_and_usage_errors() -> None:
    assert ops("--help").returncode == 0
    bad = ops("frobnicate")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def test_status_steps_cancel_resume_fork_and_errors(
    rt: Runtime, version: str, start_worker: Callable[..., Any]
) -> None:
    wid = f"cli-{version}"
    rt.client.start(t.sleeper, 30.0, workflow_id=wid)
    start_worker()
    deadline = time.monotonic() + 20
    while rt.client.get(wid)["wait_reason"] != "sleep":
        assert time.monotonic() < deadline, "workflow never parked in its sleep"
        time.sleep(0.02)
    status = ops("status", wid)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "PENDING"
    steps = json.loads(ops("steps", wid).stdout)
    assert [s["function_name"] for s in steps] == ["t.tx_effect", "kodo.sleep"]
    assert ops("cancel", wid).returncode == 0
    assert rt.client.get(wid)["status"] == "CANCELLED"
    again = ops("cancel", wid)
    assert (again.returncode, again.stderr.strip()) == (
        1,
        "error: cannot cancel workflow in status CANCELLED",
    )
    missing = ops("status", "no-such-workflow")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: workflow not found: no-such-workflow")
    too_far = ops("fork", wid, "--step", "99")
    assert (too_far.returncode, too_far.stderr.strip()) == (1, "error: fork stepN 99 exceeds max step 2")
    forked = ops("fork", wid, "--step", "2")
    assert forked.returncode == 0, forked.stderr
    new_id = json.loads(forked.stdout)["forkedWorkflowID"]
    assert rt.client.get(new_id)["forked_from"] == wid
    assert ops("resume", wid).returncode == 0
    assert rt.client.get(wid)["status"] in ("ENQUEUED", "PENDING")
    once = json.loads(ops("reconcile", "--once").stdout)
    assert set(once) == {"timers", "dead_leases", "republished", "timed_out", "scheduled"}
