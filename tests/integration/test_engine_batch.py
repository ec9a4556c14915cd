"""Batched commits (`kodo.workflow.execution`): the transactions of consecutive operations of one
delivery commit together, and a plain step commits what came before it before its function runs.
Real worker processes, killed with kill -9 while a batch is open and right after it committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t

Sql = Callable[..., list[dict[str, Any]]]
Worker = Callable[..., procs.WorkerProc]


def _recorded(rt: Runtime, wid: str) -> list[str]:
    return [s["function_name"] for s in rt.client.steps(wid)]


def test_a_kill_inside_a_batch_loses_all_of_it_and_the_next_delivery_runs_it_once(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    first = start_worker(name="dies", faults="step.started@t.tx_last")
    wid = "batch-open"
    rt.client.start(t.batched, workflow_id=wid)
    first.wait_fault()  # inside the third transaction: the first two ran in the same open batch
    assert _recorded(rt, wid) == []  # neither checkpoint is visible: they commit with the batch
    assert effects_of(sql, wid) == {}  # nor their product writes
    first.kill9()
    start_worker(name="recovers")
    assert rt.client.wait(wid, 60)["status"] == "SUCCESS"
    assert _recorded(rt, wid) == ["t.tx_effect", "t.tx_effect", "t.tx_last", "t.plain_effect"]
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1, "b4": 1}


def test_a_plain_step_commits_the_batch_before_its_function_runs(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    first = start_worker(name="dies", faults="step.started@t.plain_effect")
    wid = "batch-committed"
    rt.client.start(t.batched, workflow_id=wid)
    first.wait_fault()  # in the plain step, before its function
    assert _recorded(rt, wid) == ["t.tx_effect", "t.tx_effect", "t.tx_last"]
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1}
    first.kill9()
    start_worker(name="recovers")
    assert rt.client.wait(wid, 60)["status"] == "SUCCESS"
    assert effects_of(sql, wid) == {"b1": 1, "b2": 1, "b3": 1, "b4": 1}  # the batch was not run again
