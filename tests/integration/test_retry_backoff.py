"""Retry closure (seed 001 lab L, the original's retry-backoff test): a sandbox task failing on
infrastructure is attempted 3 times with growing backoff (~1 s, then ~2 s), and the run ends
`retries_exceeded` with `REPAIR` and no ExecuteST row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.support import procs
from tests.support.intent import Sql, start_run, wait_run

Worker = Callable[..., procs.WorkerProc]


def _steps(sql: Sql, run_id: str) -> list[dict[str, Any]]:
    return sql("SELECT step_id FROM app.run_steps WHERE run_id = %s ORDER BY started_at", (run_id,))


def _hooks(command: str) -> dict[str, Any]:
    return {"testHooks": {"testCommand": command}}


def test_infra_failure_retries_three_times_with_backoff_then_fails(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    _, run_id = start_run(rt, sql, "infra", constraints=_hooks("INFRA_FAIL"), approved=True)
    row = wait_run(sql, run_id, "retries_exceeded", timeout=40)
    assert row["next_action"] == "REPAIR"
    assert "exceeded its maximum of 3 retries" in row["error"] and "BOOT_FAIL" in row["error"]
    rows = sql(
        "SELECT attempt, extract(epoch FROM created_at) AS t FROM app.sbx_runs WHERE run_id = %s ORDER BY attempt",
        (run_id,),
    )
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    gap1, gap2 = float(rows[1]["t"] - rows[0]["t"]), float(rows[2]["t"] - rows[1]["t"])
    assert gap1 >= 0.8 and gap2 >= 1.8 and gap2 > gap1
    assert "ExecuteST" not in [s["step_id"] for s in _steps(sql, run_id)]
