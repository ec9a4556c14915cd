"""Batched commits (`kodo.workflow.execution`): the transactions of consecutive operations of one
delivery commit together, and a plain step commits what came before it before its function runs.
Real worker processes, killed with kill -9 while a batch is open and right after it committed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import insert_unpublished

Sql = Callable[..., list[dict[str, Any]]]
Worker = Callable[..., procs.WorkerProc]


def _recorded(rt: Runtime, wid: str) -> list[str]:
    return [s["function_name"] for s in rt.client.steps(wid)]


def _hang_at(rt: Runtime, start_worker: Worker, fault: str, wid: str) -> procs.WorkerProc:
    """Start `t.batched` as `wid` on a worker that hangs at `fault` (until the test kills it)."""
    first = start_worker(name="dies", faults=fault)
    rt.client.start(t.batched, workflow_id=wid)
    first.wait_fault()
    return first


def _recover(rt: Runtime, start_worker: Worker, first: procs.WorkerProc, wid: str) -> None:
    """kill -9 the hung worker; a fresh one runs the workflow to SUCCESS."""
    first.kill9()
    start_worker(name="recovers")
    assert rt.client.wait(wid, 60)["status"] == "SUCCESS"


def test_a_kill_inside_a_batch_loses_all_of_it_and_the_next_delivery_runs_it_once(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    wid = "batch-open"
    # Inside the third transaction: the others ran in the same open batch.
    first = _hang_at(rt, start_worker, "step.started@t.tx_last", wid)
    assert _recorded(rt, wid) == []  # no checkpoint is visible, the pure step's neither: one batch
    assert effects_of(sql, wid) == {}  # nor their product writes
    _recover(rt, start_worker, first, wid)
    assert _recorded(rt, wid) == ["t.tx_effect", "t.tx_effect", "t.pure_label", "t.tx_last", "t.plain_effect"]
    assert json.loads(rt.client.get(wid)["output"]) == ["b1", "b2", "pure p", "b3", "b4"]
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1, "b4": 1}


def test_a_plain_step_commits_the_batch_before_its_function_runs(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    wid = "batch-committed"
    first = _hang_at(rt, start_worker, "step.started@t.plain_effect", wid)  # before its function
    assert _recorded(rt, wid) == ["t.tx_effect", "t.tx_effect", "t.pure_label", "t.tx_last"]
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1}
    _recover(rt, start_worker, first, wid)
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1, "b4": 1}  # the batch was not run again


def test_an_operation_failing_after_others_in_a_batch_runs_the_delivery_again_unbatched(
    rt: Runtime, sql: Sql
) -> None:
    """The batch has no savepoints: the failure rolls back the first transaction's write too, and the
    body runs again with each operation on its own (the first commits, the failing one records its
    error, the body catches it). Every committed write happens once."""
    wid = "batch-fails"
    insert_unpublished(rt, t.batch_catches, workflow_id=wid)
    assert str(rt.engine.execute(wid)) == "success"
    assert json.loads(rt.client.get(wid)["output"]) == ["u1", "caught u2 failed", "u3"]
    assert effects_of(sql, wid) == {"u1": 1, "u3": 1}  # u2's write rolled back, each time
    steps = rt.client.steps(wid)
    assert [(s["function_id"], s["function_name"], s["error"] is not None) for s in steps] == [
        (1, "t.tx_effect", False),
        (2, "t.tx_raising", True),
        (3, "t.tx_effect", False),
    ]
