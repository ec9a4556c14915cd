"""What a publish, a delivery, an ack and a task event cost on the real Redis broker.

kombu's Redis channel built a new `redis.Redis` object for every command sent outside its consuming
client (every publish, delivery, ack and event: `kodo.dispatch`); a channel now keeps one client per
connection pool. And a worker's task events (sent while a monitor watches) leave in batches
(`workers.consumer`), every one of them still delivered. What must not change: a publish after the
broker dropped the connection still goes through within the publish timeout, a channel whose pools
were dropped (closed or forked) builds a new client on its new pool, and an ack on a channel whose
connection was lost is still tolerated (`workers.consumer`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.connection
from celery import Celery
from kombu.entity import Queue
from kombu.messaging import Consumer

from kodo.config import Settings
from kodo.db import monitor
from kodo.dispatch import CeleryDispatcher, producer_app
from kodo.runtime import Runtime
from tests.conftest import TEST_REDIS
from tests.support import workflows as t

N = 200


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """`redis.Redis` client objects and Redis connections created meanwhile (the real classes, counted)."""
    counts: Counter[str] = Counter()
    counted: list[tuple[type[Any], str]] = [
        (redis.Redis, "clients"),
        (redis.connection.AbstractConnection, "connections"),
    ]
    originals = [(cls, cls.__init__) for cls, _ in counted]
    for cls, key in counted:

        def init(self: Any, *args: Any, _original: Any = cls.__init__, _key: str = key, **kw: Any) -> None:
            counts[_key] += 1
            _original(self, *args, **kw)

        cls.__init__ = init
    try:
        yield counts
    finally:
        for cls, original in originals:
            cls.__init__ = original


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    app = producer_app(settings)
    yield app
    app.close()


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"clientsQ-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(TEST_REDIS)
    client.delete(name, *client.keys(f"_kombu.binding.*{name}*"))
    client.close()


def test_publishes_reuse_one_client(app: Celery, queue: str) -> None:
    dispatcher = CeleryDispatcher(app)
    dispatcher.publish("warm", queue)
    with counting() as counts:
        for i in range(N):
            dispatcher.publish(f"wf-{i}", queue, name="T.run", partition_key="p")
    assert counts["clients"] == 0, f"{counts['clients']} redis.Redis objects for {N} publishes"
    assert counts["connections"] == 0
    assert redis.Redis.from_url(TEST_REDIS).llen(queue) == N + 1


def test_deliveries_and_acks_reuse_one_client(app: Celery, queue: str) -> None:
    dispatcher = CeleryDispatcher(app)
    for i in range(N):
        dispatcher.publish(f"wf-{i}", queue)
    got: list[Any] = []
    # The suite's killed workers may have left unacked entries of their own in this Redis db.
    before = set(redis.Redis.from_url(TEST_REDIS).hkeys("unacked"))
    with app.connection_for_read() as conn:
        consumer = Consumer(conn.default_channel, [Queue(queue)], callbacks=[lambda _b, m: got.append(m)])  # type: ignore[no-untyped-call]
        consumer.consume()  # type: ignore[no-untyped-call]
        acked = 0
        with counting() as counts:
            while acked < N:
                conn.drain_events(timeout=5)
                while got:
                    got.pop().ack()
                    acked += 1
        unacked = set(redis.Redis.from_url(TEST_REDIS).hkeys("unacked")) - before
    # Each delivery records its unacked entry and each ack removes it: one client for all of them.
    assert counts["clients"] <= 1, f"{counts['clients']} redis.Redis objects for {N} deliveries and acks"
    assert counts["connections"] <= 1
    assert unacked == set()  # every delivery of this test was acked


def test_task_events_reuse_one_client(app: Celery) -> None:
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="clients@test", buffer_group=["task"])
        dispatcher.send("task-received", uuid="warm", name="T.run")
        dispatcher.flush()
        with counting() as counts:
            for i in range(N):
                dispatcher.send("task-succeeded", uuid=f"t-{i}", runtime=0.0)
                dispatcher.flush()  # one publish per event: the worst case
        dispatcher.close()
    assert counts["clients"] == 0, f"{counts['clients']} redis.Redis objects for {N} event publishes"


def _kill_connections(app: Celery) -> int:
    """Drop the broker connections of the app's publishing channel, as a Redis restart does."""
    with app.producer_or_acquire() as producer:  # the producer (and channel) the next publish gets
        pool = producer.channel.pool
    ids = []
    for c in list(pool._available_connections):
        c.send_command("CLIENT", "ID")
        ids.append(c.read_response())
    admin = redis.Redis.from_url(TEST_REDIS)
    killed = sum(int(admin.client_kill_filter(_id=str(i))) for i in ids)
    admin.close()
    return killed


def test_a_publish_after_the_broker_dropped_the_connection_goes_through(
    app: Celery, settings: Settings, queue: str
) -> None:
    dispatcher = CeleryDispatcher(app)
    dispatcher.publish("before", queue)
    assert _kill_connections(app) >= 1
    t0 = time.monotonic()
    dispatcher.publish("after", queue)
    assert time.monotonic() - t0 < settings.publish_timeout_ms / 1000
    assert redis.Redis.from_url(TEST_REDIS).llen(queue) == 2


def test_a_channel_whose_pools_were_dropped_builds_a_client_on_its_new_pool(app: Celery, queue: str) -> None:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first:
            assert first.connection_pool is channel.pool
        channel._after_fork()  # what a fork does to it (and a close): its pools are disconnected and dropped
        with counting() as counts, channel.conn_or_acquire() as second:
            assert second.connection_pool is channel.pool
            second.lpush(queue, "x")
        assert second is not first
        assert counts["clients"] == 1
        with channel.conn_or_acquire() as third:
            assert third is second
    assert redis.Redis.from_url(TEST_REDIS).llen(queue) == 1


def test_an_ack_on_a_channel_whose_connection_was_lost_is_tolerated(app: Celery, queue: str) -> None:
    import workers.consumer  # noqa: F401  # the worker's kombu patches, as a worker has them

    CeleryDispatcher(app).publish("lost", queue)
    got: list[Any] = []
    conn = app.connection_for_read()
    consumer = Consumer(conn.default_channel, [Queue(queue)], callbacks=[lambda _b, m: got.append(m)])  # type: ignore[no-untyped-call]
    consumer.consume()  # type: ignore[no-untyped-call]
    conn.drain_events(timeout=5)
    assert len(got) == 1
    conn.collect()  # the connection is lost: its channel is closed (its message restored) and detached
    got[0].ack()  # tolerated (skipped with a warning), as before
    assert redis.Redis.from_url(TEST_REDIS).llen(queue) == 1  # restored, delivered again later


# ---- task events in batches (a real worker, a real monitor lock) ------------------------------------


def _event_messages(pubsub: Any, quiet_s: float = 1.0) -> list[tuple[str, list[dict[str, Any]]]]:
    """(routing key, events) of each event message published on the event exchange."""
    got: list[tuple[str, list[dict[str, Any]]]] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        msg = pubsub.get_message(timeout=0.2)
        if msg is None or msg["type"] != "pmessage":
            continue
        last = time.monotonic()
        envelope = json.loads(msg["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        key = envelope["properties"]["delivery_info"]["routing_key"]
        got.append((key, body if isinstance(body, list) else [body]))
    return got


def test_task_events_leave_in_batches_and_every_one_arrives(
    rt: Runtime, settings: Settings, start_worker: Callable[..., Any]
) -> None:
    db = int(TEST_REDIS.rpartition("/")[2] or 0)
    sub = redis.Redis.from_url(TEST_REDIS).pubsub()
    sub.psubscribe(f"/{db}.celeryev/task.*")
    watch = monitor.hold(settings.database_url)
    try:
        worker = start_worker(name="evb", queues="intentQ", concurrency=4)
        worker.wait_log("task events on: a monitor (Flower) watches", 15)
        ids = [f"evb-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
        for wid in ids:
            rt.client.start(t.sleeper, 0, workflow_id=wid)
        for wid in ids:
            assert rt.client.wait(wid, 60)["status"] == "SUCCESS"
        messages = _event_messages(sub)
    finally:
        watch.close()
        sub.close()
    events = [e for _, batch in messages for e in batch]
    received = {e["uuid"]: json.dumps(e.get("args")) for e in events if e["type"] == "task-received"}
    by_type: dict[str, set[str]] = {}
    for e in events:
        by_type.setdefault(e["type"], set()).add(e["uuid"])
    # Every delivery of every workflow: received, started and succeeded, none lost.
    assert all(any(wid in args for args in received.values()) for wid in ids)
    assert by_type["task-started"] == set(received) == by_type["task-succeeded"]
    # ... in far fewer publishes than events (one per event when flushed at every loop tick).
    print(f"\n{len(events)} task events of {len(received)} deliveries in {len(messages)} publishes")
    assert len(messages) * 3 <= len(events), f"{len(messages)} publishes for {len(events)} events"
