"""Cancel is a checkpoint boundary: a status transition checked before each step (never a Celery
revoke). Resume continues the same id from its checkpoints; fork copies the outputs before step N
into a new workflow id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from kodo import clock
from kodo.errors import ConflictError, NotFoundError
from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished, poll


def test_cancel_while_sleeping_then_resume_continues_from_checkpoints(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    wid = "cancel-nap"
    rt.client.start(t.sleeper, 0.8, workflow_id=wid)
    poll(lambda: rt.client.get(wid)["wait_reason"] == "sleep", 15, "the sleeper parked")
    wake_at = rt.client.get(wid)["wake_at_epoch_ms"]
    rt.client.cancel(wid)
    row = rt.client.get(wid)
    assert row["status"] == "CANCELLED"
    assert row["wait_reason"] is None

    # Well past the wake-up time the timer does not fire and the step after the sleep never runs.
    while clock.now_ms() < wake_at + 700:
        time.sleep(0.05)
    row = rt.client.get(wid)
    assert row["status"] == "CANCELLED"
    assert row["lease_epoch"] == 1
    assert effects_of(sql, wid) == {"before": 1}
    assert [s["function_name"] for s in rt.client.steps(wid)] == ["t.tx_effect", "kodo.sleep"]

    # Resume: same id, replays "before" and the (elapsed) sleep, runs "after".
    rt.client.resume(wid)
    done = rt.client.wait(wid, 15)
    assert done["status"] == "SUCCESS"
    assert done["workflow_uuid"] == wid
    assert effects_of(sql, wid) == {"before": 1, "after": 1}
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1, 2, 3]


def test_cancel_is_checked_at_the_next_step_boundary(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    wid = "cancel-midway"
    rt.client.start(t.effects, 4, 1.0, workflow_id=wid)  # odd steps hold for 1 s
    poll(lambda: effects_of(sql, wid).get("e1") == 1, 15, "step e1 running")
    rt.client.cancel(wid)
    assert rt.client.get(wid)["status"] == "CANCELLED"
    # The step in flight finishes; the runner stops at the boundary before e2 and gives its lease back.
    poll(lambda: rt.client.get(wid)["executor_id"] is None, 10, "the runner released its lease")
    time.sleep(0.3)
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1}
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1, 2]
    assert rt.client.get(wid)["status"] == "CANCELLED"

    rt.client.resume(wid)
    done = rt.client.wait(wid, 15)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == ["e0", "e1", "e2", "e3"]
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}


@pytest.mark.parametrize("op", ["sleep", "recv"])
def test_a_cancel_landing_just_before_a_wait_releases_the_lease(rt: Runtime, sql: Sql, op: str) -> None:
    """Cancelled between a step and a durable wait: the run stops as cancelled and gives its lease
    back, so a resume runs it at once (not after the lease expires, and not as a 'recovery')."""
    wid = f"cancel-before-{op}"
    insert_unpublished(rt, t.cancel_then_wait, op, workflow_id=wid)
    assert str(rt.engine.execute(wid)) == "cancelled"
    row = rt.client.get(wid)
    assert row["status"] == "CANCELLED"
    assert row["executor_id"] is None
    assert row["wait_reason"] is None
    assert [s["function_name"] for s in rt.client.steps(wid)] == ["t.cancel_self"]

    rt.client.resume(wid)
    assert rt.client.get(wid)["status"] == "ENQUEUED"
    assert str(rt.engine.execute(wid)) == "parked"
    resumed = rt.client.get(wid)
    assert resumed["recovery_attempts"] == 0
    assert resumed["wait_reason"] == ("sleep" if op == "sleep" else "recv:never")


def test_cancel_resume_of_finished_or_unknown_workflows_are_refused(rt: Runtime) -> None:
    insert_unpublished(rt, t.four_steps, workflow_id="done-already")
    assert str(rt.engine.execute("done-already")) == "success"
    with pytest.raises(ConflictError, match="cannot cancel workflow in status SUCCESS"):
        rt.client.cancel("done-already")
    with pytest.raises(ConflictError, match="cannot resume workflow in status SUCCESS"):
        rt.client.resume("done-already")
    assert rt.client.get("done-already")["status"] == "SUCCESS"
    with pytest.raises(NotFoundError):
        rt.client.cancel("never-started")


def test_fork_reuses_outputs_before_step_n_and_runs_the_rest(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    rt.client.start(t.effects, 4, workflow_id="fork-src")
    original = rt.client.wait("fork-src", 15)
    assert original["status"] == "SUCCESS"

    new_id = rt.client.fork("fork-src", 3, new_workflow_id="fork-dst")
    assert new_id == "fork-dst"
    done = rt.client.wait("fork-dst", 15)
    assert done["status"] == "SUCCESS"
    assert done["forked_from"] == "fork-src"
    assert done["output"] == original["output"]
    # Steps 1-2 were copied (their effects did not run again under the new id); 3-4 ran.
    assert effects_of(sql, "fork-dst") == {"e2": 1, "e3": 1}
    assert effects_of(sql, "fork-src") == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}
    src_steps = rt.client.steps("fork-src")
    dst_steps = rt.client.steps("fork-dst")
    assert [s["function_id"] for s in dst_steps] == [1, 2, 3, 4]
    assert dst_steps[:2] == src_steps[:2]  # copied verbatim, timestamps included
    assert rt.client.get("fork-src")["status"] == "SUCCESS"


def test_fork_bounds(rt: Runtime) -> None:
    insert_unpublished(rt, t.effects, 4, workflow_id="fork-bounds")
    assert str(rt.engine.execute("fork-bounds")) == "success"
    with pytest.raises(ConflictError, match="exceeds max step 4"):
        rt.client.fork("fork-bounds", 5, new_workflow_id="fork-bounds-5")
    with pytest.raises(ConflictError):
        rt.client.fork("fork-bounds", 0, new_workflow_id="fork-bounds-0")
    with pytest.raises(NotFoundError):
        rt.client.fork("no-such-workflow", 1)
    for refused in ("fork-bounds-5", "fork-bounds-0"):
        with pytest.raises(NotFoundError):
            rt.client.get(refused)
    # An existing target id is refused too (fork never overwrites a workflow).
    with pytest.raises(ConflictError, match="already exists"):
        rt.client.fork("fork-bounds", 2, new_workflow_id="fork-bounds")


def test_a_workflow_past_its_timeout_is_cancelled_by_the_reconciler(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    rt.client.start(t.sleeper, 30.0, workflow_id="timeout-short", timeout_ms=800)
    rt.client.start(t.sleeper, 30.0, workflow_id="timeout-none")
    assert rt.client.wait("timeout-short", 10)["status"] == "CANCELLED"
    [row] = sql(
        "SELECT workflow_timeout_ms, workflow_deadline_epoch_ms - started_at_epoch_ms AS budget "
        "FROM dbos.workflow_status WHERE workflow_uuid = 'timeout-short'"
    )
    assert row == {"workflow_timeout_ms": 800, "budget": 800}  # the clock starts at the first claim
    assert rt.client.get("timeout-none")["status"] == "PENDING"
