"""Fork after fix (seed 002 walkthrough D): an ops fork of a failed intent run re-executes the steps
after its copied prefix, with new attempts, new sandbox children and its own receipt.

The run fails at ExecuteST (a misconfigured sandbox worker: BOOT_FAIL on every attempt); the operator
fixes the worker and forks the run at the operation of ApplyPatchST through `POST
/api/ops/wf/:wid/fork` with the walkthrough's `stepN: 2`. The fork reuses the load and CompileST records (cached: no new row, no model
call), re-runs ApplyPatchST, DecideST and ExecuteST as attempt 2 (sandbox attempt 4), and the run
ends `succeeded` with one receipt, seen once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kodo.api import create_app
from kodo.runtime import Runtime
from tests.support import procs
from tests.support.api import body, post
from tests.support.helpers import poll
from tests.support.intent import Sql, start_run, wait_run

Worker = Callable[..., procs.WorkerProc]


def _function_id(sql: Sql, wid: str, name: str) -> int:
    [row] = sql(
        "SELECT function_id FROM dbos.operation_outputs WHERE workflow_uuid = %s AND function_name = %s",
        (wid, name),
    )
    return int(row["function_id"])


def _model_calls(sql: Sql, run_id: str) -> dict[str, int]:
    rows = sql(
        "SELECT step_id, count(*) AS n FROM app.opencode_calls WHERE run_id = %s GROUP BY step_id", (run_id,)
    )
    return {r["step_id"]: r["n"] for r in rows}


def _attempts(sql: Sql, run_id: str) -> list[tuple[str, int]]:
    rows = sql(
        "SELECT step_id, attempt FROM app.run_steps WHERE run_id = %s ORDER BY step_id, attempt", (run_id,)
    )
    return [(r["step_id"], r["attempt"]) for r in rows]


def test_fork_after_fix_reuses_the_prefix_and_reexecutes_the_rest(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker(name="intent", queues="intentQ,controlQ")
    broken = start_worker(
        name="sbx-broken",
        queues="sbxQ",
        env={"SBX_MODE": "live", "SBX_PROVIDER": "microsandbox", "SBX_ALT_PROVIDER_ENABLED": "true"},
    )
    wid, run_id = start_run(rt, sql, "fork after fix", approved=True)
    row = wait_run(sql, run_id, "retries_exceeded", timeout=40)
    assert "BOOT_FAIL" in row["error"]
    [original_child] = sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s", (wid,)
    )
    calls_before = _model_calls(sql, run_id)
    broken.kill9()
    start_worker(name="sbx-fixed", queues="sbxQ")  # the operator fixes the configuration

    # The API's stepN is a 0-based functionId: walkthrough D's `stepN: 2` is the ApplyPatchST operation.
    step_n = _function_id(sql, wid, "ApplyPatchST") - 1
    assert step_n == 2
    http = create_app(runtime=rt).test_client()
    r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": step_n, "actor": "fde", "reason": "patch-applied"})
    assert r.status_code == 202, body(r)
    fork = body(r)["forkedWorkflowID"]
    assert fork != wid

    poll(
        lambda: (
            sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (fork,))[0]["status"]
            == "SUCCESS"
        ),
        timeout=40,
        what="the fork's SUCCESS",
    )
    row = wait_run(sql, run_id, "succeeded", timeout=10)
    assert (row["last_step"], row["next_action"], row["error"]) == ("ExecuteST", "NONE", None)

    # Cached: load and CompileST are the original's records (same output, no new attempt, no new
    # model call); the rest ran again as attempt 2, the sandbox continuing after its 3 failed attempts.
    assert _function_id(sql, fork, "CompileST") == _function_id(sql, wid, "CompileST")
    assert _attempts(sql, run_id) == [
        ("ApplyPatchST", 1), ("ApplyPatchST", 2),
        ("CompileST", 1),
        ("DecideST", 1), ("DecideST", 2),
        ("ExecuteST", 4),
    ]  # fmt: skip
    sbx = sql("SELECT attempt, err_code FROM app.sbx_runs WHERE run_id = %s ORDER BY attempt", (run_id,))
    assert [(a["attempt"], a["err_code"]) for a in sbx] == [
        (1, "BOOT_FAIL"), (2, "BOOT_FAIL"), (3, "BOOT_FAIL"), (4, "NONE"),
    ]  # fmt: skip
    # One new DecideST model call; CompileST was not called again.
    assert _model_calls(sql, run_id) == {**calls_before, "DecideST": calls_before["DecideST"] + 1}

    # A new sandbox child of the fork; the original's child is untouched.
    children = sql("SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s", (fork,))
    assert [c["workflow_uuid"] for c in children] == [original_child["workflow_uuid"] + f"-f{fork}"]
    receipts = sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
    assert [r["seen_count"] for r in receipts] == [1]  # the fork's (the original failed before its commit)
    audit = sql(
        "SELECT inline FROM app.artifacts WHERE step_id = 'OPS' AND inline->>'targetWorkflowID' = %s", (wid,)
    )
    assert [a["inline"]["forkedWorkflowID"] for a in audit] == [fork]


def test_a_fork_of_a_succeeded_run_at_execute_runs_the_sandbox_again_without_a_duplicate_receipt(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "fork a finished run", approved=True)
    wait_run(sql, run_id, "succeeded", timeout=30)
    step_n = _function_id(sql, wid, "DecideST") + 1  # the first operation after DecideST
    fork = rt.client.fork(wid, step_n)
    poll(
        lambda: (
            sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (fork,))[0]["status"]
            == "SUCCESS"
        ),
        timeout=30,
        what="the fork's SUCCESS",
    )
    time.sleep(0.2)
    assert _attempts(sql, run_id) == [
        ("ApplyPatchST", 1), ("CompileST", 1), ("DecideST", 1), ("ExecuteST", 1), ("ExecuteST", 2),
    ]  # fmt: skip
    receipts = sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
    assert sorted(r["seen_count"] for r in receipts) == [1, 1]
    assert len(sql("SELECT 1 FROM app.sbx_runs WHERE run_id = %s", (run_id,))) == 2
    assert wait_run(sql, run_id, "succeeded")["retry_count"] == 0
