"""SlowStep: step1 marks s1, a durable sleep, step2 marks s2 (contract-api §9.4-9.6, seed 001 lab F).

The ops plane's proof workflow: cancel it during its sleep and it stops at the next step boundary
(`s1=1, s2=0`, CANCELLED); resume it and the same id continues from its checkpoints to SUCCESS
(`s2=1`). Its operations are `0 step1, 1 kodo.sleep, 2 step2` (functionId from 0), so a fork at
`stepN` 1 or 2 runs from the sleep or from step2.

The marks go to `app.marks` under the workflow id it was *started* with (its first argument), in the
same transaction as each step's checkpoint, as the original wrote them: a fork gets the original's
arguments, so it marks the original's id again, a no-op.
"""

from __future__ import annotations

from typing import Any

from kodo import workflow as wf
from kodo.db.queries import Q
from kodo.queues import CONTROL_QUEUE


@wf.transaction(name="step1")
def step1(conn: Any, run_id: str) -> str:
    conn.execute(Q["insert_mark"], {"run_id": run_id, "step": "s1"})
    return "s1"


@wf.transaction(name="step2")
def step2(conn: Any, run_id: str) -> str:
    conn.execute(Q["insert_mark"], {"run_id": run_id, "step": "s2"})
    return "s2"


@wf.workflow(name="SlowStepWorkflow", queue=CONTROL_QUEUE, max_recovery_attempts=10)
def slow_step(run_id: str, sleep_ms: int) -> dict[str, Any]:
    step1(run_id)
    wf.sleep(sleep_ms / 1000)
    step2(run_id)
    return {"ok": True, "workflowId": run_id}
