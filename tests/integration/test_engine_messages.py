"""Messages: send/recv are durable and each message is consumed once, in order; a message sent before
the recv is found without parking; recv times out to None; no lost wake-up whatever the moment of the
send relative to the receiver parking; idempotency keys; unknown destinations.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from kodo import clock
from kodo.errors import NotFoundError
from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.helpers import Sql, insert_unpublished, poll

FORCE_PENDING = """
UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = NULL, lease_until_epoch_ms = NULL,
    output = NULL, error = NULL
WHERE workflow_uuid = %s
"""
MESSAGES = """
SELECT topic, message, consumed_by_function_id FROM dbos.notifications
WHERE destination_uuid = %s ORDER BY seq
"""


def test_two_sends_are_received_in_order_and_consumed_once(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    wid = "rx-two"
    rt.client.start(t.receive_n, "greet", 2, 30, workflow_id=wid)
    poll(lambda: rt.client.get(wid)["wait_reason"] == "recv:greet", 15, "the receiver parked")
    assert rt.client.get(wid)["executor_id"] is None
    assert rt.client.send(wid, "m1", topic="greet")
    assert rt.client.send(wid, {"n": 2}, topic="greet")
    done = rt.client.wait(wid, 10)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == ["m1", {"n": 2}]
    # Each message consumed exactly once, by the recv that returned it (function ids 2 and 4).
    assert sql(MESSAGES, (wid,)) == [
        {"topic": "greet", "message": '"m1"', "consumed_by_function_id": 2},
        {"topic": "greet", "message": '{"n":2}', "consumed_by_function_id": 4},
    ]

    # Durable: re-execution replays the recorded receives and consumes nothing new.
    assert rt.client.send(wid, "m3", topic="greet")
    sql(FORCE_PENDING, (wid,))
    assert str(rt.engine.execute(wid)) == "success"
    assert json.loads(rt.client.get(wid)["output"]) == ["m1", {"n": 2}]
    assert sql(MESSAGES, (wid,))[2] == {"topic": "greet", "message": '"m3"', "consumed_by_function_id": None}


def test_a_message_sent_before_the_recv_is_found_without_parking(rt: Runtime, sql: Sql) -> None:
    wid = "rx-early"
    insert_unpublished(rt, t.receiver, "early", 30, workflow_id=wid)
    assert rt.client.send(wid, "already here", topic="early")
    assert rt.client.send(wid, "other topic", topic="elsewhere")
    assert str(rt.engine.execute(wid)) == "success"  # not "parked"
    row = rt.client.get(wid)
    assert json.loads(row["output"]) == "already here"
    assert row["lease_epoch"] == 1
    assert effects_of(sql, wid) == {"received": 1}
    assert [m["consumed_by_function_id"] for m in sql(MESSAGES, (wid,))] == [2, None]


def test_recv_times_out_to_none(rt: Runtime, start_worker: Callable[..., Any], sql: Sql) -> None:
    start_worker()
    wid = "rx-timeout"
    rt.client.start(t.receiver, "silence", 0.5, workflow_id=wid)
    done = rt.client.wait(wid, 10)
    assert done["status"] == "SUCCESS"
    assert done["output"] == "null"
    steps = rt.client.steps(wid)
    assert [s["function_name"] for s in steps] == ["kodo.recv.deadline", "kodo.recv", "t.tx_effect"]
    deadline = int(json.loads(steps[0]["output"])["deadline"])
    assert steps[0]["started_at_epoch_ms"] + 500 == deadline
    assert steps[1]["completed_at_epoch_ms"] >= deadline  # not before the timeout
    assert steps[1]["completed_at_epoch_ms"] - deadline < 1500  # and promptly after it
    assert effects_of(sql, wid) == {"received": 1}


def test_no_lost_wake_up_whenever_the_send_lands(rt: Runtime, start_worker: Callable[..., Any]) -> None:
    """The send races the receiver parking: before it claims, while it checks, after it parked."""
    start_worker()
    rng = random.Random(20240611)
    slow: list[str] = []
    parked = 0
    for i in range(30):
        wid = f"rx-race-{i}"
        rt.client.start(t.receiver, "race", 60, workflow_id=wid)
        time.sleep(rng.uniform(0, 0.02))
        sent = time.monotonic()
        assert rt.client.send(wid, i, topic="race")
        row = rt.client.wait(wid, timeout_s=5, poll_s=0.005)  # the receiver's timeout is 60 s
        took = time.monotonic() - sent
        assert row["status"] == "SUCCESS"
        assert json.loads(row["output"]) == i
        if took > 2.0:
            slow.append(f"{wid}: {took:.2f}s")
        parked += row["lease_epoch"] == 2
    assert slow == []
    print(f"{parked}/30 receivers parked before the send arrived")


def test_an_idempotency_key_delivers_once(rt: Runtime, sql: Sql) -> None:
    wid = "rx-idem"
    insert_unpublished(rt, t.receive_n, "k", 2, 0.3, workflow_id=wid)
    key = f"{wid}-key-1"
    assert rt.client.send(wid, "once", topic="k", idempotency_key=key) is True
    assert rt.client.send(wid, "once", topic="k", idempotency_key=key) is False
    assert len(sql(MESSAGES, (wid,))) == 1
    # First recv gets the message; the second has nothing and parks until its 0.3 s timeout.
    assert str(rt.engine.execute(wid)) == "parked"
    assert rt.client.get(wid)["wait_reason"] == "recv:k"
    reconciler = rt.reconciler()
    deadline = rt.client.get(wid)["wake_at_epoch_ms"]
    while clock.now_ms() < deadline:
        time.sleep(0.02)
    assert reconciler.wake_timers() == 1
    assert str(rt.engine.execute(wid)) == "success"
    assert json.loads(rt.client.get(wid)["output"]) == ["once", None]


def test_send_to_an_unknown_workflow_is_not_found(rt: Runtime, sql: Sql) -> None:
    with pytest.raises(NotFoundError, match="workflow not found: no-such-workflow"):
        rt.client.send("no-such-workflow", "hello")
    assert sql(MESSAGES, ("no-such-workflow",)) == []


def test_a_workflow_sends_exactly_once_per_call_site(
    rt: Runtime, start_worker: Callable[..., Any], sql: Sql
) -> None:
    start_worker()
    rt.client.start(t.receive_n, "wf", 2, 1.0, workflow_id="rx-from-wf")
    rt.client.start(t.sender, "rx-from-wf", "wf", "hi", workflow_id="tx-to-rx")
    assert rt.client.wait("tx-to-rx", 10)["status"] == "SUCCESS"
    # Re-executing the sender replays its recorded send: no second message.
    sql(FORCE_PENDING, ("tx-to-rx",))
    assert str(rt.engine.execute("tx-to-rx")) == "success"
    done = rt.client.wait("rx-from-wf", 10)
    assert json.loads(done["output"]) == ["hi", None]
    assert [m["message"] for m in sql(MESSAGES, ("rx-from-wf",))] == ['"hi"']
