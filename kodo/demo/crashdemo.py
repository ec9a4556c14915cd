"""CrashDemo: step 1 marks s1, durable sleep WF_SLEEP_MS, step 2 marks s2 (contract-api §4.10).

The marks are written in the same transaction as each step's checkpoint, so `{s1:1, s2:1}` holds
whatever instant the worker is killed at.
"""

from __future__ import annotations

from typing import Any

from kodo import workflow as wf
from kodo.db.queries import Q
from kodo.queues import CONTROL_QUEUE


@wf.transaction(name="crashdemo.mark")
def mark(conn: Any, run_id: str, step: str) -> str:
    conn.execute(Q["insert_mark"], {"run_id": run_id, "step": step})
    return step


@wf.workflow(name="CrashDemoWorkflow", queue=CONTROL_QUEUE, max_recovery_attempts=10)
def crash_demo(sleep_ms: int) -> dict[str, Any]:
    run_id = wf.current_workflow_id()
    mark(run_id, "s1")
    wf.sleep(sleep_ms / 1000)
    mark(run_id, "s2")
    return {"ok": True, "workflowId": run_id}
