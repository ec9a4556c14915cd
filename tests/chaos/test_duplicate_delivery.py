"""Invariant 3 (one runner at a time): the same workflow delivered many times at once, to two worker
processes, runs every step once; every extra delivery is a counted no-op on the row.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t

pytestmark = pytest.mark.chaos

Sql = Callable[..., list[dict[str, Any]]]

DELIVERIES = 6
STEPS = 4
HOLD_S = 0.4  # each non-transactional step holds its worker this long: deliveries overlap the run


def test_same_workflow_delivered_at_once_to_two_workers_runs_each_step_once(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql
) -> None:
    a = start_worker(name="a", queues="intentQ", ready=False)
    b = start_worker(name="b", queues="intentQ", ready=False)
    a.wait_ready()
    b.wait_ready()
    wid = f"dup-{uuid.uuid4().hex[:8]}"
    # Insert the row without publishing, then ring the doorbell DELIVERIES times at the same instant.
    with rt.db.tx() as c:
        assert rt.client.start_txn(c, t.effects, (STEPS, HOLD_S), {}, workflow_id=wid).created
    barrier = threading.Barrier(DELIVERIES)
    errors: list[BaseException] = []

    def ring() -> None:
        try:
            barrier.wait(5)
            rt.engine.dispatcher.publish(wid, "intentQ")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ring) for _ in range(DELIVERIES)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert errors == []

    row = rt.client.wait(wid, 30)
    assert row["status"] == "SUCCESS", row
    # Every effect ran once, and one runner (one lease) did all the work.
    assert effects_of(sql, wid) == {f"e{i}": 1 for i in range(STEPS)}
    assert [s["function_id"] for s in rt.client.steps(wid)] == list(range(1, STEPS + 1))
    assert row["lease_epoch"] == 1
    assert row["recovery_attempts"] == 0

    # Every other delivery reached a worker and was a counted no-op.
    deadline = time.monotonic() + 15
    while rt.client.get(wid)["noop_deliveries"] < DELIVERIES - 1:
        assert time.monotonic() < deadline, rt.client.get(wid)
        time.sleep(0.05)
    assert rt.client.get(wid)["noop_deliveries"] == DELIVERIES - 1

    # Both processes got deliveries, and at least one arrived while the run held its lease, i.e.
    # truly concurrent with it: the fence turned it away.
    def delivered() -> dict[str, int]:
        return {w.name: w.log.read_text().count(f"kodo.run_workflow {wid} ->") for w in (a, b)}

    while sum(delivered().values()) < DELIVERIES:  # the task logs its outcome just after the write
        assert time.monotonic() < deadline, delivered()
        time.sleep(0.05)
    delivered_to = delivered()
    assert all(n >= 1 for n in delivered_to.values()), delivered_to
    assert sum(delivered_to.values()) == DELIVERIES, delivered_to
    outcomes = a.log.read_text() + b.log.read_text()
    assert outcomes.count(f"kodo.run_workflow {wid} -> success") == 1
    assert outcomes.count(f"kodo.run_workflow {wid} -> noop") == DELIVERIES - 1
    assert f"no-op delivery of {wid}: leased by" in outcomes
