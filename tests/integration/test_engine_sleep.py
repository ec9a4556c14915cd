"""Durable sleep: the workflow parks (wait_reason 'sleep', no executor: no worker slot held), wakes at
and not before its recorded wake_at, and the wake time is fixed by the first execution.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kodo import clock
from kodo.db.pool import Conn
from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, poll

CLEAR_WAIT = "UPDATE dbos.workflow_status SET wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL WHERE workflow_uuid = %s"


def _wake_at(rt: Runtime, wid: str) -> int:
    [rec] = [s for s in rt.client.steps(wid) if s["function_name"] == "kodo.sleep"]
    return int(json.loads(rec["output"])["wake_at"])


def test_a_sleeping_workflow_holds_no_slot_and_wakes_on_time(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker(concurrency=1)
    rt.client.start(t.sleeper, 2.0, workflow_id="nap")
    poll(lambda: rt.client.get("nap")["wait_reason"] == "sleep", 15, "the sleeper parked")
    parked = rt.client.get("nap")
    assert parked["status"] == "PENDING"
    assert parked["executor_id"] is None
    assert parked["lease_until_epoch_ms"] is None
    wake_at = _wake_at(rt, "nap")
    assert parked["wake_at_epoch_ms"] == wake_at

    # The only worker slot is free: another workflow runs to completion while the first sleeps.
    rt.client.start(t.four_steps, workflow_id="meanwhile")
    assert rt.client.wait("meanwhile", 10)["status"] == "SUCCESS"
    assert clock.now_ms() < wake_at
    still = rt.client.get("nap")
    assert still["status"] == "PENDING"
    assert still["wait_reason"] == "sleep"
    assert effects_of(sql, "nap") == {"before": 1}

    done = rt.client.wait("nap", 15)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == "woke"
    after = [s for s in rt.client.steps("nap") if s["function_id"] == 3]
    assert after[0]["function_name"] == "t.tx_effect"
    # Not before its wake-up time, and promptly after it (timers are pushed by NOTIFY, not polled).
    assert after[0]["started_at_epoch_ms"] >= wake_at
    assert done["updated_at"] - wake_at < 1500
    assert done["lease_epoch"] == 2  # one run up to the sleep, one after it
    assert effects_of(sql, "nap") == {"before": 1, "after": 1}


def test_wake_time_is_fixed_at_the_first_execution(rt: Runtime, sql: Sql) -> None:
    wid = "nap-fixed"
    c: Conn
    with rt.db.tx() as c:
        assert rt.client.start_txn(c, t.sleeper, (1.0,), {}, workflow_id=wid).created
    t0 = clock.now_ms()
    assert str(rt.engine.execute(wid)) == "parked"
    wake_at = _wake_at(rt, wid)
    assert t0 + 1000 <= wake_at <= clock.now_ms() + 1000
    assert rt.client.get(wid)["wake_at_epoch_ms"] == wake_at

    # A delivery while it sleeps is a no-op; the reconciler does not wake it early.
    assert str(rt.engine.execute(wid)) == "noop"
    reconciler = rt.reconciler()
    assert reconciler.wake_timers() == 0
    assert rt.client.get(wid)["wait_reason"] == "sleep"

    # A spurious early wake (the wait cleared by hand) 400 ms later: re-execution parks again on the
    # recorded wake-up, not on "now + 1 s".
    time.sleep(0.4)
    sql(CLEAR_WAIT, (wid,))
    assert str(rt.engine.execute(wid)) == "parked"
    row = rt.client.get(wid)
    assert row["wait_reason"] == "sleep"
    assert row["wake_at_epoch_ms"] == wake_at
    assert _wake_at(rt, wid) == wake_at
    assert effects_of(sql, wid) == {"before": 1}

    # Once due, the reconciler wakes it and the next run goes past the sleep.
    while clock.now_ms() < wake_at:
        time.sleep(0.02)
    assert reconciler.wake_timers() == 1
    assert str(rt.engine.execute(wid)) == "success"
    assert effects_of(sql, wid) == {"before": 1, "after": 1}
    assert [s["function_name"] for s in rt.client.steps(wid)] == ["t.tx_effect", "kodo.sleep", "t.tx_effect"]
