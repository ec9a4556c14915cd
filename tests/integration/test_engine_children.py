"""Children: fan-out/fan-in lives in Postgres. The parent waits without holding a worker slot, is woken
exactly once by the child whose completion makes the count whole, and sees each child's result or
exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished


def test_fan_out_parent_holds_no_slot_and_wakes_once_after_the_last_child(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    # One worker, ONE slot, serving both queues: had the waiting parent kept its slot, no child could
    # ever run and this would time out.
    start_worker(queues="intentQ,sbxQ", concurrency=1)
    rt.client.start(t.fan_out, 4, workflow_id="fan")
    done = rt.client.wait("fan", 30)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == [0, 10, 20, 30]

    kids = sql(
        "SELECT workflow_uuid, status, queue_name, lease_epoch, updated_at FROM dbos.workflow_status "
        "WHERE parent_workflow_id = 'fan' ORDER BY workflow_uuid"
    )
    assert [(k["workflow_uuid"], k["status"], k["queue_name"]) for k in kids] == [
        (f"fan-c{i}", "SUCCESS", "sbxQ") for i in range(4)
    ]
    assert all(k["lease_epoch"] == 1 for k in kids)
    for i in range(4):
        assert effects_of(sql, f"fan-c{i}") == {f"child{i}": 1}

    # Exactly two runs of the parent: up to the fan-in wait, and once after the last child finished.
    assert done["lease_epoch"] == 2
    assert done["noop_deliveries"] == 0
    steps = rt.client.steps("fan")
    names = [s["function_name"] for s in steps]
    assert names == ["kodo.start_child"] * 4 + ["kodo.wait_children"] + ["kodo.get_result"] * 4
    fan_in = steps[4]
    # The fan-in was recorded after every child finished, by the run that the last child woke.
    assert fan_in["completed_at_epoch_ms"] >= max(k["updated_at"] for k in kids)
    summary = json.loads(fan_in["output"])
    assert [(s["workflow_id"], s["status"], s["output"]) for s in summary] == [
        (f"fan-c{i}", "SUCCESS", i * 10) for i in range(4)
    ]


def test_children_started_in_one_batch_are_one_operation_and_the_parent_wakes_once(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql
) -> None:
    start_worker(name="intent", queues="intentQ", concurrency=1)
    start_worker(name="sbx", queues="sbxQ", concurrency=2)
    rt.client.start(t.batch_fan_out, 30, workflow_id="batch")
    done = rt.client.wait("batch", 60)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == [i * 10 for i in range(30)]
    kids = sql(
        "SELECT workflow_uuid, status, queue_name FROM dbos.workflow_status WHERE parent_workflow_id = 'batch'"
    )
    assert sorted((k["workflow_uuid"], k["status"], k["queue_name"]) for k in kids) == sorted(
        (f"batch-b{i}", "SUCCESS", "sbxQ") for i in range(30)
    )
    names = [s["function_name"] for s in rt.client.steps("batch")]
    assert names == ["kodo.start_children", "kodo.wait_children"]
    assert json.loads(rt.client.steps("batch")[0]["output"]) == [f"batch-b{i}" for i in range(30)]
    # Two runs of the parent, each passing the batch (recorded by the first, replayed by the
    # second): up to the fan-in, and once after the last child woke it.
    assert done["lease_epoch"] == 2
    assert effects_of(sql, "batch") == {"batch-started": 2}


def test_a_failing_childs_exception_surfaces_through_get_result(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql
) -> None:
    w_intent = start_worker(name="intent", queues="intentQ", concurrency=1, ready=False)
    w_sbx = start_worker(name="sbx", queues="sbxQ", concurrency=1, ready=False)
    w_intent.wait_ready()
    w_sbx.wait_ready()

    rt.client.start(t.parent_of_failing, True, workflow_id="pf-catch")
    rt.client.start(t.parent_of_failing, False, workflow_id="pf-raise")
    caught = rt.client.wait("pf-catch", 30)
    raised = rt.client.wait("pf-raise", 30)

    # The child's own exception class and message reach the parent's code.
    assert caught["status"] == "SUCCESS"
    assert json.loads(caught["output"]) == "caught ValueError: child 7 failed"
    assert raised["status"] == "ERROR"
    assert json.loads(raised["error"])["type"] == "builtins.ValueError"
    assert json.loads(raised["error"])["message"] == "child 7 failed"
    for parent in ("pf-catch", "pf-raise"):
        child = rt.client.get(f"{parent}-c")
        assert child["status"] == "ERROR"
        assert child["queue_name"] == "sbxQ"
        assert effects_of(sql, f"{parent}-c") == {"child7": 1}
        [get_result] = [s for s in rt.client.steps(parent) if s["function_name"] == "kodo.get_result"]
        assert get_result["error"] == child["error"]


def test_cancelling_a_child_wakes_a_parent_waiting_on_it(rt: Runtime, sql: Sql) -> None:
    """A cancelled child is finished for its parent: get_result raises instead of waiting forever."""
    insert_unpublished(rt, t.awaits_child, 30, "one", workflow_id="await-one")
    assert str(rt.engine.execute("await-one")) == "parked"
    assert rt.client.get("await-one")["wait_reason"] == "child:await-one-c"
    assert str(rt.engine.execute("await-one-c")) == "parked"  # the child sleeps 30 s
    rt.client.cancel("await-one-c")
    parent = rt.client.get("await-one")
    assert parent["wait_reason"] is None  # woken by the cancel
    assert str(rt.engine.execute("await-one")) == "error"
    err = json.loads(rt.client.get("await-one")["error"])
    assert err["type"] == "kodo.errors.ChildWorkflowError"
    assert "ended CANCELLED" in err["message"]


def test_cancelling_the_last_running_child_completes_the_fan_in(rt: Runtime) -> None:
    insert_unpublished(rt, t.awaits_child, 30, "all", workflow_id="await-all")
    assert str(rt.engine.execute("await-all")) == "parked"
    assert rt.client.get("await-all")["wait_reason"] == "children"
    rt.client.cancel("await-all-c")
    assert rt.client.get("await-all")["wait_reason"] is None
    assert str(rt.engine.execute("await-all")) == "success"
    assert json.loads(rt.client.get("await-all")["output"]) == ["CANCELLED"]


def test_a_child_that_exceeds_its_recovery_attempts_wakes_its_parent(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.awaits_child, 30, "one", workflow_id="await-max")
    assert str(rt.engine.execute("await-max")) == "parked"
    # The child's runner keeps dying on another host until the cap (0 recoveries allowed) is hit.
    sql(
        "UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'otherhost:1:x', "
        "lease_until_epoch_ms = 1, max_recovery_attempts = 0 WHERE workflow_uuid = 'await-max-c'"
    )
    assert str(rt.engine.execute("await-max-c")) == "exceeded"
    assert rt.client.get("await-max")["wait_reason"] is None
    assert str(rt.engine.execute("await-max")) == "error"
    err = json.loads(rt.client.get("await-max")["error"])
    assert err["type"] == "kodo.errors.ChildWorkflowError"
    assert "ended MAX_RECOVERY_ATTEMPTS_EXCEEDED" in err["message"]
