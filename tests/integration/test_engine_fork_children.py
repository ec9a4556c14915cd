"""A fork shares its original's children (README "Ops plane"): on a real worker, a fork taken while
the children still run waits for those same children, and one taken after they finished reads their
recorded results. Either way the children run once, and no child of the fork's own is started.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kodo.intent.ops import OpsService
from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import Sql, poll

CHILD_SLEEP_S = 3.0


def _children(sql: Sql, parent: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT workflow_uuid, status, updated_at FROM dbos.workflow_status "
        "WHERE parent_workflow_id = %s ORDER BY workflow_uuid",
        (parent,),
    )


def test_a_fork_taken_while_the_children_run_waits_for_the_same_children(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql, version: str
) -> None:
    wid = f"fkc-{version}"
    rt.client.start(t.fan_out_slow, 2, CHILD_SLEEP_S, workflow_id=wid)
    start_worker(queues="intentQ,sbxQ", concurrency=2)
    poll(lambda: rt.client.get(wid)["wait_reason"] == f"child:{wid}-c0", 30, "the parent waiting on c0")
    ops = OpsService(rt)
    # functionIds: 0, 1 the child starts, 2 the step after them (the last recorded operation).
    assert [s["stepId"] for s in ops.steps(wid)] == ["kodo.start_child", "kodo.start_child", "t.tx_effect"]
    forked = ops.fork(wid, 2, actor="qa", reason="children still running")
    assert {c["status"] for c in _children(sql, wid)} <= {"ENQUEUED", "PENDING"}  # still running

    poll(lambda: rt.client.get(forked)["wait_reason"] == f"child:{wid}-c0", 10, "the fork waiting on c0")
    parent, fork = rt.client.wait(wid, 30), rt.client.wait(forked, 30)
    assert (parent["status"], fork["status"]) == ("SUCCESS", "SUCCESS"), (parent["error"], fork["error"])
    assert (
        json.loads(fork["output"]) == json.loads(parent["output"]) == [f"{wid}-c0:slept", f"{wid}-c1:slept"]
    )

    kids = _children(sql, wid)
    assert [k["workflow_uuid"] for k in kids] == [f"{wid}-c0", f"{wid}-c1"]
    for k in kids:
        assert effects_of(sql, k["workflow_uuid"]) == {"sleepy-child-done": 1}  # each child ran once
    assert _children(sql, forked) == []  # the fork started none of its own
    assert effects_of(sql, forked) == {"fanned-out": 1}  # it re-ran the step at stepN only
    # It really waited: its results were recorded after the children ended.
    results = [s for s in rt.client.steps(forked) if s["function_name"] == "kodo.get_result"]
    assert [s["child_workflow_id"] for s in results] == [f"{wid}-c0", f"{wid}-c1"]
    assert results[0]["completed_at_epoch_ms"] >= kids[0]["updated_at"]


def test_a_fork_taken_after_the_children_finished_reads_their_recorded_results(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql, version: str
) -> None:
    wid = f"fkd-{version}"
    rt.client.start(t.fan_out_slow, 2, 0.2, workflow_id=wid)
    start_worker(queues="intentQ,sbxQ", concurrency=2)
    parent = rt.client.wait(wid, 30)
    assert parent["status"] == "SUCCESS"
    forked = OpsService(rt).fork(wid, 2)
    fork = rt.client.wait(forked, 30)
    assert fork["status"] == "SUCCESS"
    assert json.loads(fork["output"]) == json.loads(parent["output"])
    assert fork["lease_epoch"] == 1  # one run, no wait: the children had ended
    for i in range(2):
        assert effects_of(sql, f"{wid}-c{i}") == {"sleepy-child-done": 1}
    assert _children(sql, forked) == []


def test_a_fork_after_a_batch_start_reads_the_originals_children(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql
) -> None:
    # The batch (operation 1) is copied: the fork's wait finds the children it names (child_states'
    # start_children branch), already finished, and starts none of its own.
    start_worker(name="intent", queues="intentQ", concurrency=1)
    start_worker(name="sbx", queues="sbxQ", concurrency=2)
    rt.client.start(t.batch_fan_out, 3, workflow_id="bf")
    assert rt.client.wait("bf", 30)["status"] == "SUCCESS"
    forked = rt.client.fork("bf", 2, new_workflow_id="bf-fork")
    done = rt.client.wait(forked, 30)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == [0, 10, 20]
    assert sql("SELECT count(*) AS n FROM dbos.workflow_status WHERE parent_workflow_id = %s", (forked,)) == [
        {"n": 0}
    ]
