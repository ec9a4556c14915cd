"""The operators' views (contract-internals §2.12): failures in 24 h, slow operations, queue depth."""

from __future__ import annotations

from kodo import clock
from kodo.runtime import Runtime
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished


def test_the_inbox_lists_recent_failures_only(rt: Runtime, sql: Sql) -> None:
    for wid in ("v-failed", "v-exceeded", "v-old-failure", "v-ok"):
        insert_unpublished(rt, t.four_steps, workflow_id=wid)
    sql("UPDATE dbos.workflow_status SET status = 'ERROR', error = 'boom' WHERE workflow_uuid = 'v-failed'")
    sql(
        "UPDATE dbos.workflow_status SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' "
        "WHERE workflow_uuid = 'v-exceeded'"
    )
    sql(
        "UPDATE dbos.workflow_status SET status = 'ERROR', created_at = %s WHERE workflow_uuid = 'v-old-failure'",
        (clock.now_ms() - 25 * 3600 * 1000,),
    )
    sql("UPDATE dbos.workflow_status SET status = 'SUCCESS' WHERE workflow_uuid = 'v-ok'")
    rows = sql("SELECT workflow_uuid, status, workflow_name, error FROM app.v_ops_failures_24h ORDER BY 1")
    assert [(r["workflow_uuid"], r["status"]) for r in rows if r["workflow_uuid"].startswith("v-")] == [
        ("v-exceeded", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"),
        ("v-failed", "ERROR"),
    ]
    assert next(r for r in rows if r["workflow_uuid"] == "v-failed")["workflow_name"] == "t.four_steps"


def test_slow_steps_are_the_operations_over_five_seconds(rt: Runtime, sql: Sql) -> None:
    insert_unpublished(rt, t.four_steps, workflow_id="v-slow")
    assert str(rt.engine.execute("v-slow")) == "success"
    sql(
        "UPDATE dbos.operation_outputs SET completed_at_epoch_ms = started_at_epoch_ms + 6000 "
        "WHERE workflow_uuid = 'v-slow' AND function_id = 2"
    )
    rows = sql(
        "SELECT function_id, function_name, duration_ms FROM app.v_ops_slow_steps WHERE workflow_uuid = 'v-slow'"
    )
    assert rows == [{"function_id": 2, "function_name": "t.noop", "duration_ms": 6000}]


def test_queue_depth_counts_waiting_and_running_work_per_queue(rt: Runtime, sql: Sql, version: str) -> None:
    for i in range(3):
        insert_unpublished(rt, t.four_steps, workflow_id=f"v-depth-{i}", queue="depthQ")
    sql("UPDATE dbos.workflow_status SET status = 'PENDING' WHERE workflow_uuid = 'v-depth-0'")
    rows = sql(
        "SELECT status, workflow_count FROM app.v_ops_queue_depth WHERE queue_name = 'depthQ' ORDER BY status"
    )
    assert rows == [{"status": "ENQUEUED", "workflow_count": 2}, {"status": "PENDING", "workflow_count": 1}]
