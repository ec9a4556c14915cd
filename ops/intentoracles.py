"""The database side of the intent chaos proof (`ops.intentchaos`): the run, its sandbox children,
and the oracles checked once a round is over.

The truth is SQL: `app.*` for the product (runs, run_steps, mock_receipts, sbx_runs), `dbos.*` for
the engine (workflow_status).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ops import processes
from ops.soak import SqlReader

REUSED_STEPS = ("CompileST", "ApplyPatchST", "DecideST")  # done before the kill: never run again
STATUS_TIMEOUT_S = 10.0


class IntentRunSql(SqlReader):
    """The reads of one proof (a lazily opened connection, `SqlReader`'s)."""

    def run_row(self, run_id: str) -> dict[str, Any]:
        rows = self.sql(
            "SELECT status, last_step, error, (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms "
            "FROM app.runs WHERE id = %s",
            (run_id,),
        )
        if not rows:
            raise RuntimeError(f"run {run_id} has no app.runs row")
        return rows[0]

    def children(self, workflow_id: str) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT workflow_uuid, status, executor_id, recovery_attempts FROM dbos.workflow_status "
            "WHERE parent_workflow_id = %s AND queue_name = 'sbxQ' ORDER BY workflow_uuid",
            (workflow_id,),
        )

    def count(self, query: str, params: tuple[Any, ...]) -> int:
        return int(next(iter(self.sql(query, params)[0].values())))

    def oracles(
        self, run_id: str, workflow_id: str, kill_ms: int | None, tasks: int
    ) -> tuple[dict[str, str], list[str]]:
        """The SQL checks of the original script and of seed 000 L13/L17 for a run of `tasks` sandbox
        tasks killed at `kill_ms` (None: no kill inside ExecuteST to check, as in the sandbox soaks):
        each check's value (in the order the round's line shows them) and the failures."""
        checks: dict[str, str] = {}
        failures: list[str] = []
        steps = self.sql(
            "SELECT step_id, attempt, output->>'attempt' AS out_attempt FROM app.run_steps "
            "WHERE run_id = %s ORDER BY started_at, step_id",
            (run_id,),
        )
        for step in (*REUSED_STEPS, "ExecuteST"):
            rows = [s for s in steps if s["step_id"] == step]
            checks[step] = ",".join(f"a{r['attempt']}" for r in rows) or "none"
            if step in REUSED_STEPS and [(r["attempt"], r["out_attempt"]) for r in rows] != [(1, "1")]:
                failures.append(
                    f"{step} rows {[(r['attempt'], r['out_attempt']) for r in rows]}, want one attempt 1"
                )
            if step == "ExecuteST" and len(rows) != 1:
                failures.append(f"ExecuteST rows {len(rows)}, want 1")

        receipts = self.sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
        dup_receipts = sum(1 for r in receipts if int(r["seen_count"]) > 1)
        checks["receipts"] = str(len(receipts))
        checks["dup_receipts"] = str(dup_receipts)
        if dup_receipts:
            failures.append(f"{dup_receipts} receipt(s) with seen_count>1")
        if len(receipts) != 1:
            failures.append(f"{len(receipts)} receipts, want 1")

        sbx = self.sql(
            "SELECT task_key, attempt, err_code, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms "
            "FROM app.sbx_runs WHERE run_id = %s",
            (run_id,),
        )
        dup_sbx = self.count(
            "SELECT count(*) FROM (SELECT 1 FROM app.sbx_runs WHERE run_id = %s "
            "GROUP BY run_id, step_id, task_key, attempt HAVING count(*) > 1) d",
            (run_id,),
        )
        checks["sbx_runs"] = str(len(sbx))
        checks["dup_sbx"] = str(dup_sbx)
        if dup_sbx:
            failures.append(f"{dup_sbx} duplicate (run_id,step_id,task_key,attempt) in app.sbx_runs")
        if len(sbx) != tasks or len({r["task_key"] for r in sbx}) != tasks:
            failures.append(f"{len(sbx)} sbx_runs rows for {tasks} tasks")
        bad = sorted({(r["attempt"], r["err_code"]) for r in sbx} - {(1, "NONE")})
        if bad:
            failures.append(f"sbx_runs attempts/err_codes {bad}, want only (1, NONE)")
        early = 0 if kill_ms is None else sum(1 for r in sbx if int(r["created_ms"]) <= kill_ms)
        if early:
            failures.append(f"{early} sbx_runs row(s) recorded before the kill: it missed ExecuteST")

        def engine_done() -> bool:
            rows = self.sql(
                "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s OR parent_workflow_id = %s",
                (workflow_id, workflow_id),
            )
            return all(r["status"] == "SUCCESS" for r in rows)

        with contextlib.suppress(TimeoutError):  # reported below
            processes.wait_until("the workflows SUCCESS", engine_done, STATUS_TIMEOUT_S, 0.05)
        kids = self.children(workflow_id)
        checks["children_recovered"] = str(sum(1 for k in kids if int(k["recovery_attempts"]) > 0))
        wf_status = self.sql(
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (workflow_id,)
        )
        checks["workflow"] = str(wf_status[0]["status"]) if wf_status else "MISSING"
        if checks["workflow"] != "SUCCESS" or any(k["status"] != "SUCCESS" for k in kids):
            failures.append(
                f"engine status {checks['workflow']}, children {sorted({str(k['status']) for k in kids})}"
            )
        return checks, failures
