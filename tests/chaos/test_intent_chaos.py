"""kill -9 of the whole worker in the middle of an intent run (the runbook's `wf:intent:chaos`).

The worker is frozen at an armed fault point, killed with SIGKILL, and a fresh worker takes over.
The run must still succeed with exactly one row per product step (attempt 1), one sandbox record per
task attempt, no duplicate artifact, and the ExecuteST receipt seen exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kodo.intent import STEPS
from kodo.runtime import Runtime
from tests.support import procs
from tests.support.intent import Sql, start_run, wait_run

pytestmark = pytest.mark.chaos

KILL_POINTS = [
    "step.started@IntentWorkflow.executeTask",  # inside the sandbox task, before the provider ran
    "step.committed@IntentWorkflow.executeTask",  # the task's artifacts and sbx_runs row committed
    "step.committed@ExecuteST",  # the receipt and the ExecuteST row committed, run not yet succeeded
    "step.committed@DecideST",
]


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_intent_run_survives_kill9_with_no_duplicate_effects(
    rt: Runtime, sql: Sql, start_worker: Callable[..., procs.WorkerProc], fault: str
) -> None:
    doomed = start_worker(name="doomed", faults=fault)
    _, run_id = start_run(rt, sql, "chaos", approved=True)
    doomed.wait_fault()
    doomed.kill9()
    start_worker(name="fresh")
    row = wait_run(sql, run_id, "succeeded", timeout=45)
    assert row["retry_count"] == 0
    steps = sql("SELECT step_id, attempt FROM app.run_steps WHERE run_id = %s ORDER BY started_at", (run_id,))
    assert [(s["step_id"], s["attempt"]) for s in steps] == [(s, 1) for s in STEPS]
    assert sql("SELECT attempt, err_code FROM app.sbx_runs WHERE run_id = %s", (run_id,)) == [
        {"attempt": 1, "err_code": "NONE"}
    ]
    [receipt] = sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
    assert receipt["seen_count"] == 1
    dup = sql(
        "SELECT 1 FROM app.artifacts WHERE run_id = %s GROUP BY run_id, step_id, task_key, idx, attempt "
        "HAVING count(*) > 1",
        (run_id,),
    )
    assert dup == []
    assert len(sql("SELECT 1 FROM app.artifacts WHERE run_id = %s AND step_id = 'ExecuteST'", (run_id,))) == 6
    chunks = sql(
        "SELECT n.topic FROM dbos.notifications n JOIN app.sbx_runs s ON s.task_key = n.destination_uuid "
        "WHERE s.run_id = %s ORDER BY n.seq",
        (run_id,),
    )
    assert [c["topic"] for c in chunks] == ["stdout", "stream_closed"]  # a re-run attempt adds no chunk
