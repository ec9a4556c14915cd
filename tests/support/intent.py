"""Start intent runs without the HTTP layer: insert the intent and run rows, start the workflow."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from kodo.intent import REPAIR_WORKFLOW, RUN_WORKFLOW, repair_workflow_id
from kodo.runtime import Runtime

Sql = Callable[..., list[dict[str, Any]]]


def start_run(
    rt: Runtime,
    sql: Sql,
    goal: str,
    *,
    constraints: dict[str, Any] | None = None,
    approved: bool = False,
    partition_key: str = "tenant-test",
    timeout_ms: int | None = None,
) -> tuple[str, str]:
    """Returns (intent id = workflow id, run id)."""
    intent_id = f"it_{uuid.uuid4().hex[:16]}"
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    payload = {"inputs": {}, "constraints": constraints or {}, "connectors": None}
    sql(
        "INSERT INTO app.intents (id, goal, payload) VALUES (%s, %s, %s)",
        (intent_id, goal, json.dumps(payload)),
    )
    sql(
        "INSERT INTO app.runs (id, intent_id, workflow_id, status, queue_partition_key) "
        "VALUES (%s, %s, %s, 'queued', %s)",
        (run_id, intent_id, intent_id, partition_key),
    )
    if approved:
        approve(sql, run_id)
    rt.client.start(RUN_WORKFLOW, intent_id, workflow_id=intent_id, timeout_ms=timeout_ms)
    return intent_id, run_id


def approve(sql: Sql, run_id: str) -> None:
    sql(
        "INSERT INTO app.plan_approvals (run_id, approved_by) VALUES (%s, 'test') "
        "ON CONFLICT (run_id) DO UPDATE SET approved_at = now()",
        (run_id,),
    )


def start_repair(rt: Runtime, run_id: str, repair_no: int) -> str:
    wid = repair_workflow_id(run_id, repair_no)
    rt.client.start(REPAIR_WORKFLOW, run_id, repair_no, workflow_id=wid)
    return wid


def run_row(sql: Sql, run_id: str) -> dict[str, Any]:
    [row] = sql("SELECT * FROM app.runs WHERE id = %s", (run_id,))
    return row


def wait_run(
    sql: Sql, run_id: str, want: str | set[str], timeout: float = 30.0, **fields: Any
) -> dict[str, Any]:
    """Poll app.runs until its status is `want` (and the given columns match)."""
    wanted = {want} if isinstance(want, str) else want
    deadline = time.monotonic() + timeout
    row = run_row(sql, run_id)
    while time.monotonic() < deadline:
        row = run_row(sql, run_id)
        if row["status"] in wanted and all(row[k] == v for k, v in fields.items()):
            return row
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {wanted} {fields}; last row {row}")
