"""Where kodo's time goes, without Celery: time and profile `Client.start` and `Engine.execute` in-process.

Workflows are started with `Client.start` (publishing to a queue no worker listens to; the publish is
timed apart), then executed one after another by calling `Engine.execute` directly (what the Celery
task does). Run it with no kodo worker of the same application version alive.
"""

from __future__ import annotations

import cProfile
import pstats
import time
import uuid
from typing import Any

import psycopg
import redis

from kodo.config import Settings
from kodo.dispatch import CeleryDispatcher
from kodo.runtime import Runtime
from kodo.workflow.ports import Dispatcher
from ops.bench.kodo_workflows import four_noops

PROFILE_QUEUE = "kodoBenchProfileQ"  # nobody consumes it; the next phase flushes the broker db


class RoundTrips:
    """Counts psycopg statements and transaction blocks (each block adds BEGIN/COMMIT or a savepoint pair)."""

    def __init__(self) -> None:
        self.statements = 0
        self.blocks = 0
        self._orig_execute = psycopg.Connection.execute
        self._orig_transaction = psycopg.Connection.transaction

    def __enter__(self) -> RoundTrips:
        counter = self
        orig_execute, orig_transaction = self._orig_execute, self._orig_transaction

        def execute(conn: Any, *args: Any, **kwargs: Any) -> Any:
            counter.statements += 1
            return orig_execute(conn, *args, **kwargs)

        def transaction(conn: Any, *args: Any, **kwargs: Any) -> Any:
            counter.blocks += 1
            return orig_transaction(conn, *args, **kwargs)

        psycopg.Connection.execute = execute  # type: ignore[method-assign,assignment]
        psycopg.Connection.transaction = transaction  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        psycopg.Connection.execute = self._orig_execute  # type: ignore[method-assign]
        psycopg.Connection.transaction = self._orig_transaction  # type: ignore[method-assign]

    @property
    def round_trips(self) -> int:
        return self.statements + 2 * self.blocks


def close_runtime(rt: Runtime) -> None:
    """Close the runtime's broker connections (the benchmark checks the broker db for other clients)."""
    if isinstance(rt.engine.dispatcher, CeleryDispatcher):
        rt.engine.dispatcher.app.close()


def profile_engine(settings: Settings, n: int = 200) -> list[str]:
    rt = Runtime.build(settings)
    try:
        return _profile(rt, n)
    finally:
        close_runtime(rt)
        broker = redis.Redis.from_url(settings.broker_url)
        broker.delete(PROFILE_QUEUE)  # the messages published above; nobody will consume them
        broker.close()


class _TimedDispatcher:
    """Wraps the runtime's dispatcher: times each publish and sends it to PROFILE_QUEUE instead."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner
        self.wall = 0.0
        self.cpu = 0.0

    def publish(
        self, workflow_id: str, queue: str, *, name: str | None = None, partition_key: str | None = None
    ) -> None:
        a, b = time.perf_counter(), time.process_time()
        self.inner.publish(workflow_id, PROFILE_QUEUE, name=name, partition_key=partition_key)
        self.wall += time.perf_counter() - a
        self.cpu += time.process_time() - b


def _profile(rt: Runtime, n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    timed = _TimedDispatcher(rt.engine.dispatcher)
    rt.engine.dispatcher = timed
    sent_event = isinstance(timed.inner, CeleryDispatcher) and bool(timed.inner.app.conf.task_send_sent_event)

    def create(count: int, tag: str) -> tuple[list[str], float, float, float]:
        """`Client.start` `count` workflows; per start: (insert ms, publish ms, publish CPU ms)."""
        ids: list[str] = []
        total = 0.0
        timed.wall = timed.cpu = 0.0
        for i in range(count):
            wid = f"prof-{run}-{tag}-{i}"
            a = time.perf_counter()
            rt.client.start(four_noops, workflow_id=wid)
            total += time.perf_counter() - a
            ids.append(wid)
        per = 1000 / count
        return ids, (total - timed.wall) * per, timed.wall * per, timed.cpu * per

    ids, insert_ms, publish_ms, publish_cpu_ms = create(n + 1, "t")
    with RoundTrips() as start_trips:
        create(1, "count")
    rt.engine.execute(ids[0])  # warm the pool and code paths
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for wid in ids[1:]:
        outcome = rt.engine.execute(wid)
        if outcome.kind != "success":
            raise RuntimeError(f"profile run of {wid}: {outcome}")
    wall_ms = (time.perf_counter() - wall0) / n * 1000
    cpu_ms = (time.process_time() - cpu0) / n * 1000
    counted = create(1, "count2")[0][0]
    with RoundTrips() as exec_trips:
        rt.engine.execute(counted)

    pids = create(n, "p")[0]
    prof = cProfile.Profile()
    prof.enable()
    for wid in pids:
        rt.engine.execute(wid)
    prof.disable()
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:5]
    total_tt = sum(v[2] for v in raw.values()) or 1.0
    own = ", ".join(
        f"{path.rsplit('/', 1)[-1]}:{func} {v[2] / total_tt:.0%}" for (path, _line, func), v in top
    )
    return [
        f"in-process kodo (no Celery, no worker; same database), {n} workflows one after another:",
        f"  Client.start: insert {insert_ms:.2f} ms ({start_trips.round_trips} round trip(s):"
        f" {start_trips.statements} statement(s), {start_trips.blocks} transaction/savepoint blocks)"
        f" + publish {publish_ms:.2f} ms wall / {publish_cpu_ms:.2f} ms CPU"
        f" (Celery send_task{' + task-sent event' if sent_event else ''})",
        f"  Engine.execute: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU per workflow;"
        f" {exec_trips.round_trips} round trip(s) ({exec_trips.statements} statements,"
        f" {exec_trips.blocks} transaction block) for claim + 4 steps + completion",
        f"  own time under cProfile: {own}",
    ]
