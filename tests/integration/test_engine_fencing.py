"""Fencing: one runner at a time. A run whose lease epoch went stale (a zombie after a takeover) cannot
write a checkpoint, a product row or the outcome; a duplicate delivery is a counted no-op.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from kodo import clock
from kodo.errors import Preempted
from kodo.records import Checkpoint
from kodo.runtime import Runtime
from kodo.states import WorkflowStatus
from kodo.workflow import context, executor, serde
from kodo.workflow.execution import Execution
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished, poll

TAKEOVER = """
UPDATE dbos.workflow_status SET lease_epoch = lease_epoch + 1, executor_id = 'otherhost:1:x',
    lease_until_epoch_ms = %(until)s
WHERE workflow_uuid = %(w)s
"""
EXPIRE_FOREIGN = "UPDATE dbos.workflow_status SET lease_until_epoch_ms = 1 WHERE workflow_uuid = %s"


def test_zombie_transaction_step_is_refused_and_its_product_write_rolls_back(
    rt: Runtime, sql: Sql, monkeypatch: pytest.MonkeyPatch
) -> None:
    wid = "zombie-tx"
    insert_unpublished(rt, t.zombie, "tx", workflow_id=wid)
    # While step 2 (a transaction) runs, another executor takes the workflow over (epoch 1 -> 2).
    monkeypatch.setenv(t.TAKEOVER_ENV, wid)
    assert str(rt.engine.execute(wid)) == "preempted"

    row = rt.client.get(wid)
    assert row["status"] == "PENDING"  # the zombie wrote no outcome
    assert row["executor_id"] == t.TAKEOVER_EXECUTOR
    assert row["lease_epoch"] == 2
    # Its checkpoint was refused and the product write in the same transaction rolled back.
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1]
    assert effects_of(sql, wid) == {"z-first": 1}

    # A delivery while the new owner's lease is live is a counted no-op.
    assert str(rt.engine.execute(wid)) == "noop"
    assert rt.client.get(wid)["noop_deliveries"] == 1

    # The new owner dies; the next delivery recovers and the transaction's effect happens once in all.
    monkeypatch.delenv(t.TAKEOVER_ENV)
    sql(EXPIRE_FOREIGN, (wid,))
    assert str(rt.engine.execute(wid)) == "success"
    done = rt.client.get(wid)
    assert json.loads(done["output"]) == ["z-first", "z-tx", "z-after"]
    assert done["recovery_attempts"] == 1
    assert effects_of(sql, wid) == {"z-first": 1, "z-tx": 1, "z-after": 1}
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1, 2, 3]


def test_zombie_plain_step_checkpoint_is_refused(
    rt: Runtime, sql: Sql, monkeypatch: pytest.MonkeyPatch
) -> None:
    wid = "zombie-step"
    insert_unpublished(rt, t.zombie, "step", workflow_id=wid)
    monkeypatch.setenv(t.TAKEOVER_ENV, wid)
    assert str(rt.engine.execute(wid)) == "preempted"
    # A plain step's side effect is outside the database transaction (at-least-once), but the
    # zombie's checkpoint of it is refused: nothing is recorded at function_id 2.
    assert effects_of(sql, wid) == {"z-first": 1, "z-step": 1}
    assert [s["function_id"] for s in rt.client.steps(wid)] == [1]
    assert rt.client.get(wid)["status"] == "PENDING"

    monkeypatch.delenv(t.TAKEOVER_ENV)
    sql(EXPIRE_FOREIGN, (wid,))
    assert str(rt.engine.execute(wid)) == "success"
    steps = rt.client.steps(wid)
    assert [(s["function_id"], s["function_name"]) for s in steps] == [
        (1, "t.plain_effect"),
        (2, "t.step_then_takeover"),
        (3, "t.tx_effect"),
    ]
    assert effects_of(sql, wid) == {"z-first": 1, "z-step": 2, "z-after": 1}


def test_a_stale_epoch_cannot_checkpoint_park_or_complete(rt: Runtime, sql: Sql) -> None:
    """Claim in this process, then bump lease_epoch with SQL (a takeover): every write is refused."""
    wid = "stale-epoch"
    insert_unpublished(rt, t.sleeper, 30, workflow_id=wid)
    with rt.store.session() as session:
        claim = rt.engine.claim(session, wid)
        assert claim is not None
        assert claim.epoch == 1
        ex = Execution(rt.engine, session, claim)
        sql(TAKEOVER, {"w": wid, "until": clock.now_ms() + 60_000})

        # A direct checkpoint write carrying the stale epoch is refused.
        now = clock.now_ms()
        checkpoint = Checkpoint(1, "t.tx_effect", serde.dumps("x"), None, now)
        assert session.record(ex.fence, checkpoint, now, now + 5000) == (None, False)
        token = context.enter(ex)
        try:
            # A transaction step's checkpoint is refused (its product write rolls back with it).
            with pytest.raises(Preempted):
                t.tx_effect("zombie-effect")
        finally:
            context.leave(token)
            ex.flush()  # run() ends a delivery's batch; this test drives the operations itself
        # A durable sleep cannot record its wake-up or park (the row is not ours to release).
        ex2 = Execution(rt.engine, session, claim)
        token = context.enter(ex2)
        try:
            with pytest.raises(Preempted):
                ex2.sleep(5)
        finally:
            context.leave(token)
            ex2.flush()
        # The terminal write is fenced too.
        assert ex.complete(WorkflowStatus.SUCCESS, serde.dumps("zombie"), None, None) == "preempted"

    after = rt.client.get(wid)
    assert after["status"] == "PENDING"
    assert after["output"] is None
    assert after["executor_id"] == "otherhost:1:x"
    assert after["lease_epoch"] == 2
    assert after["wait_reason"] is None
    assert rt.client.steps(wid) == []
    assert effects_of(sql, wid) == {}


def test_duplicate_deliveries_of_a_running_then_finished_workflow_are_counted_noops(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    wid = "dup-delivery"
    rt.client.start(t.effects, 3, 1.0, workflow_id=wid)  # e1 holds its step for 1 s
    poll(lambda: effects_of(sql, wid).get("e1") == 1, 15, "step e1 running in the worker")
    running = rt.client.get(wid)
    assert running["status"] == "PENDING"
    assert running["executor_id"] is not None

    # A duplicate delivery here (this process) and one through the broker (the worker's free slot).
    assert str(rt.engine.execute(wid)) == "noop"
    assert rt.client.get(wid)["noop_deliveries"] == 1
    rt.engine.publish(wid, "intentQ")
    poll(lambda: rt.client.get(wid)["noop_deliveries"] == 2, 10, "the broker duplicate as a no-op")

    done = rt.client.wait(wid, 20)
    assert done["status"] == "SUCCESS"
    assert done["lease_epoch"] == 1
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1}

    # After it finished: one more duplicate, still a counted no-op with no effect.
    assert str(rt.engine.execute(wid)) == "noop"
    final = rt.client.get(wid)
    assert final["noop_deliveries"] == 3
    assert final["lease_epoch"] == 1
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1}


def test_a_delivery_of_another_versions_row_leased_by_a_dead_local_process_takes_nothing_over(
    rt: Runtime, sql: Sql, version: str
) -> None:
    # A worker of this version got the doorbell of another version's row whose holder (a process on
    # this host) died: not ours to claim, so its lease is left for that version's reconcilers, and
    # the row is marked unpublished for them (due on their next pass), not stamped published now.
    wid = "foreign-dead-holder"
    insert_unpublished(rt, t.four_steps, workflow_id=wid, app_version=version + "-other")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    until = clock.now_ms() + 60_000
    sql(
        "UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = %(e)s, lease_epoch = 1,"
        " lease_until_epoch_ms = %(u)s, published_at_epoch_ms = %(now)s WHERE workflow_uuid = %(w)s",
        {"e": f"{executor.HOST}:{dead.pid}:dead", "u": until, "now": clock.now_ms(), "w": wid},
    )
    assert str(rt.engine.execute(wid)) == "noop"
    [row] = sql(
        "SELECT executor_id, lease_epoch, lease_until_epoch_ms, published_at_epoch_ms, recovery_attempts,"
        " noop_deliveries FROM dbos.workflow_status WHERE workflow_uuid = %s",
        (wid,),
    )
    assert row == {
        "executor_id": f"{executor.HOST}:{dead.pid}:dead",
        "lease_epoch": 1,
        "lease_until_epoch_ms": until,
        "published_at_epoch_ms": 0,
        "recovery_attempts": 0,
        "noop_deliveries": 1,
    }
