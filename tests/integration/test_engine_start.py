"""Starting workflows: idempotent start (one row per id, a finished workflow never re-runs) and
application-version parity (work for a version no worker serves stays ENQUEUED until one starts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kodo.errors import ConflictError
from kodo.runtime import Runtime
from kodo.workflow.client import Started
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, poll


def _rows_with_id(sql: Sql, wid: str) -> int:
    return int(sql("SELECT count(*) AS n FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))[0]["n"])


def test_same_id_twice_is_created_once_and_a_finished_workflow_never_reruns(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    first = rt.client.start(t.effects, 2, workflow_id="idem-1")
    second = rt.client.start(t.effects, 2, workflow_id="idem-1")
    assert first == Started("idem-1", True)
    assert second == Started("idem-1", False)
    done = rt.client.wait("idem-1", 20)
    assert done["status"] == "SUCCESS"
    assert effects_of(sql, "idem-1") == {"e0": 1, "e1": 1}

    # Starting the finished workflow again (even with other arguments) returns it, runs nothing.
    again = rt.client.start(t.effects, 5, workflow_id="idem-1")
    assert again == Started("idem-1", False)
    # A stray delivery of the finished workflow is a counted no-op, not a second run.
    assert str(rt.engine.execute("idem-1")) == "noop"
    time.sleep(0.5)
    row = rt.client.get("idem-1")
    assert row["status"] == "SUCCESS"
    assert row["output"] == done["output"]
    assert row["lease_epoch"] == 1  # claimed exactly once, ever
    assert row["noop_deliveries"] >= 1
    assert effects_of(sql, "idem-1") == {"e0": 1, "e1": 1}
    assert _rows_with_id(sql, "idem-1") == 1


def test_ten_concurrent_starts_of_one_id_make_one_row_and_one_run(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    wid = "idem-concurrent"
    barrier = threading.Barrier(10)
    results: list[Started] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def starter() -> None:
        try:
            barrier.wait(5)
            got = rt.client.start(t.effects, 3, workflow_id=wid)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(got)

    threads = [threading.Thread(target=starter) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert errors == []
    assert len(results) == 10
    assert all(r.workflow_id == wid for r in results)
    assert sum(r.created for r in results) == 1

    assert rt.client.wait(wid, 20)["status"] == "SUCCESS"
    assert _rows_with_id(sql, wid) == 1
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1}
    assert rt.client.get(wid)["lease_epoch"] == 1
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1, 2, 3]


def test_version_parity_work_waits_for_a_worker_of_its_own_version(
    rt: Runtime, version: str, start_worker: Callable[..., Any], sql: Sql
) -> None:
    other = f"{version}-B"
    start_worker(name="wB", env={"KODO_APP_VERSION": other})
    started = rt.client.start(t.effects, 2, workflow_id="parity-A")
    assert started.created
    assert rt.client.get("parity-A")["application_version"] == version

    # The version-B worker receives the message but refuses to claim it (a counted no-op).
    poll(lambda: rt.client.get("parity-A")["noop_deliveries"] >= 1, 10, "version-B worker refusal")
    # ... and neither it nor its reconciler ever runs it: well past the republish delay it is untouched.
    time.sleep(1.6)
    row = rt.client.get("parity-A")
    assert row["status"] == "ENQUEUED"
    assert row["lease_epoch"] == 0
    assert row["executor_id"] is None
    assert row["started_at_epoch_ms"] is None
    assert effects_of(sql, "parity-A") == {}
    assert rt.client.steps("parity-A") == []

    # A version-A worker drains it (its reconciler republishes the ENQUEUED row of its version).
    start_worker(name="wA")
    done = rt.client.wait("parity-A", 30)
    assert done["status"] == "SUCCESS"
    assert done["lease_epoch"] == 1
    assert effects_of(sql, "parity-A") == {"e0": 1, "e1": 1}


def test_a_deduplication_id_holds_only_while_the_workflow_is_in_flight(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    rt.client.start(t.effects, 1, workflow_id="dedup-a", deduplication_id="d-1")
    with pytest.raises(ConflictError):
        rt.client.start(t.effects, 1, workflow_id="dedup-b", deduplication_id="d-1")
    assert _rows_with_id(sql, "dedup-b") == 0
    start_worker()
    assert rt.client.wait("dedup-a", 20)["status"] == "SUCCESS"
    # Finished: the id is free again (a cancelled workflow frees it too).
    rt.client.start(t.effects, 1, workflow_id="dedup-b", deduplication_id="d-1")
    assert rt.client.wait("dedup-b", 20)["status"] == "SUCCESS"
    rt.client.start(t.sleeper, 30.0, workflow_id="dedup-c", deduplication_id="d-2")
    rt.client.cancel("dedup-c")
    rt.client.start(t.effects, 1, workflow_id="dedup-d", deduplication_id="d-2")
    assert rt.client.wait("dedup-d", 20)["status"] == "SUCCESS"
