"""Durable step retries: a failed attempt is recorded and the workflow parks for its backoff.

The backoff holds no worker slot (a one-slot worker runs other work meanwhile), and a worker killed
with kill -9 during the backoff loses nothing: a fresh worker runs the remaining attempts, each
exactly once, numbered 1, 2, 3, with the policy's gaps (1 s, then 2 s) between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import Sql, poll

pytestmark = pytest.mark.chaos

StartWorker = Callable[..., procs.WorkerProc]


def attempts_of(sql: Sql, wid: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT attempt, started_at_epoch_ms AS started, completed_at_epoch_ms AS completed "
        "FROM dbos.step_attempts WHERE workflow_uuid = %s ORDER BY attempt",
        (wid,),
    )


def step_of(sql: Sql, wid: str) -> dict[str, Any]:
    [step] = sql(
        "SELECT function_name, output, error, started_at_epoch_ms AS started, completed_at_epoch_ms AS completed "
        "FROM dbos.operation_outputs WHERE workflow_uuid = %s",
        (wid,),
    )
    return step


def test_a_backoff_holds_no_worker_slot(rt: Runtime, start_worker: StartWorker, sql: Sql) -> None:
    start_worker(concurrency=1)
    rt.client.start(t.slow_retrying, 2, workflow_id="retry-slot")
    poll(lambda: len(attempts_of(sql, "retry-slot")) == 1, 20, "attempt 1 failed and was recorded")
    parked = rt.client.get("retry-slot")
    assert parked["status"] == "PENDING"
    assert parked["wait_kind"] == "retry"
    assert parked["executor_id"] is None  # the lease (and the one slot) is given back

    # The only slot is free: other work runs to its end while the backoff (1 s) lasts.
    rt.client.start(t.four_steps, workflow_id="during-backoff")
    assert rt.client.wait("during-backoff", 10)["status"] == "SUCCESS"
    assert rt.client.get("retry-slot")["wait_kind"] == "retry"

    done = rt.client.wait("retry-slot", 20)
    assert done["status"] == "SUCCESS"
    assert done["output"] == "2"
    assert effects_of(sql, "retry-slot") == {"attempt-1": 1, "attempt-2": 1}
    [failed] = attempts_of(sql, "retry-slot")
    step = step_of(sql, "retry-slot")
    assert step["error"] is None
    assert step["started"] == failed["started"]  # the checkpoint spans every attempt
    assert step["completed"] - failed["completed"] >= 1000  # interval_s = 1 s before attempt 2


def test_kill9_during_a_backoff_loses_nothing_and_repeats_no_attempt(
    rt: Runtime, start_worker: StartWorker, sql: Sql
) -> None:
    victim = start_worker(name="victim")
    rt.client.start(t.slow_retrying, 3, workflow_id="retry-kill")
    poll(lambda: len(attempts_of(sql, "retry-kill")) == 1, 20, "attempt 1 failed and was recorded")
    victim.kill9()
    assert victim.live_pids() == []

    start_worker(name="rescuer")
    done = rt.client.wait("retry-kill", 30)
    assert done["status"] == "SUCCESS"
    assert done["output"] == "3"
    assert done["recovery_attempts"] == 0  # the parked run held no lease: nothing to take over
    assert effects_of(sql, "retry-kill") == {"attempt-1": 1, "attempt-2": 1, "attempt-3": 1}
    failed = attempts_of(sql, "retry-kill")
    assert [a["attempt"] for a in failed] == [1, 2]
    step = step_of(sql, "retry-kill")
    assert step["function_name"] == "t.slow_flaky"
    assert step["output"] == "3"
    # The policy's gaps hold across the kill: 1 s before attempt 2, 2 s before attempt 3.
    assert failed[1]["started"] - failed[0]["completed"] >= 1000
    assert step["completed"] - failed[1]["completed"] >= 2000
