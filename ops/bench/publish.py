"""Broker micro-benchmark: what one publish, one delivery + ack and one task event cost in CPU.

    python -m ops.bench.publish [--broker redis://127.0.0.1:6379/10] [--count 5000] [--rounds 3] [--json]

Against a real broker (a Redis db of its own: the bench's queue and its event exchange are deleted
afterwards), in this process, each measured `--rounds` times (the median is printed):

1. `publish`: `kodo.dispatch.CeleryDispatcher.publish` of a workflow doorbell, as the API and the
   workers' engine publish (the producer app of `kodo.dispatch.producer_app`, its producer pool);
2. `deliver+ack`: the message read back on a kombu consumer of the same app's connection and acked,
   as a worker's main process receives and acknowledges each task message (kombu's Redis QoS);
3. `event`: a Celery task event through the worker's event dispatcher, as a worker builds it (task
   events buffered, `buffer_group=['task']`), flushed after every event: the cost of one event
   published alone (a worker's event loop flushes its buffer at its next tick);
4. `event/24`: the same events flushed 24 at a time (Celery's buffer limit): one publish per 24 events.

Printed per operation: operations/s (wall), CPU µs per operation (process time), and the
`redis.Redis` client objects and Redis connections created per operation (counted on a separate
pass, so the counting does not weigh on the timing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.connection
from celery import Celery
from kombu.entity import Queue
from kombu.messaging import Consumer

from kodo.config import Settings
from kodo.dispatch import CeleryDispatcher, producer_app

DEFAULT_BROKER = "redis://127.0.0.1:6379/10"
COUNT_PASS = 200


@dataclass
class Figure:
    op: str
    ops_per_s: float
    cpu_us: float
    clients_per_op: float
    connections_per_op: float


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Counts `redis.Redis` client objects and Redis connections created meanwhile."""
    counts: Counter[str] = Counter()
    patched: list[tuple[type[Any], Callable[..., None]]] = []
    counted: list[tuple[type[Any], str]] = [
        (redis.Redis, "clients"),
        (redis.connection.AbstractConnection, "connections"),
    ]
    for cls, key in counted:
        original = cls.__init__

        def init(self: Any, *args: Any, _original: Any = original, _key: str = key, **kw: Any) -> None:
            counts[_key] += 1
            _original(self, *args, **kw)

        patched.append((cls, original))
        cls.__init__ = init
    try:
        yield counts
    finally:
        for cls, original in patched:
            cls.__init__ = original


Run = Callable[[int], None]


def _nothing(_n: int) -> None:
    return None


def timed(op: str, n: int, rounds: int, run: Run, prepare: Run = _nothing) -> Figure:
    """`prepare(n)` (untimed, uncounted) then `run(n)`: once counted, then `rounds` times timed."""
    prepare(COUNT_PASS)
    with counting() as counts:
        run(COUNT_PASS)
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        prepare(n)
        c0, w0 = time.process_time(), time.perf_counter()
        run(n)
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return Figure(
        op, n / wall, cpu / n * 1e6, counts["clients"] / COUNT_PASS, counts["connections"] / COUNT_PASS
    )


def bench_publish(app: Celery, queue: str) -> Run:
    dispatcher = CeleryDispatcher(app)

    def run(n: int) -> None:
        for i in range(n):
            dispatcher.publish(f"bench-{i}", queue, name="Bench.run", partition_key="p")

    return run


def bench_deliver_ack(app: Celery, queue: str) -> tuple[Run, Run]:
    """(prepare: publish n messages, run: receive and ack them)."""
    conn = app.connection_for_read()
    q = Queue(queue)  # type: ignore[no-untyped-call]
    got: list[Any] = []
    consumer = Consumer(conn.default_channel, [q], callbacks=[lambda _b, m: got.append(m)], accept=["json"])  # type: ignore[no-untyped-call]
    consumer.consume()  # type: ignore[no-untyped-call]
    dispatcher = CeleryDispatcher(app)

    def prepare(n: int) -> None:
        for i in range(n):
            dispatcher.publish(f"ack-{i}", queue)

    def run(n: int) -> None:
        done = 0
        while done < n:
            conn.drain_events(timeout=5)
            while got:
                got.pop().ack()
                done += 1

    return prepare, run


def bench_events(app: Celery, per_flush: int) -> Run:
    conn = app.connection_for_write()
    dispatcher = app.events.Dispatcher(conn, hostname="bench@publish", groups=None, buffer_group=["task"])
    fields = {"uuid": "", "name": "Bench.run", "args": "['bench']", "kwargs": "{}", "runtime": 0.01}

    def run(n: int) -> None:
        for i in range(n):
            dispatcher.send("task-succeeded", **(fields | {"uuid": f"ev-{i}"}))
            if (i + 1) % per_flush == 0:
                dispatcher.flush()
        dispatcher.flush()

    return run


def measure(broker: str, count: int, rounds: int) -> list[Figure]:
    settings = Settings.from_env({"KODO_BROKER_URL": broker})
    app = producer_app(settings)
    queue = f"benchPublishQ-{uuid.uuid4().hex[:6]}"
    figures: list[Figure] = []
    try:
        figures.append(timed("publish", count, rounds, bench_publish(app, queue)))
        prepare, run = bench_deliver_ack(app, queue)
        figures.append(timed("deliver+ack", count, rounds, run, prepare))
        figures.append(timed("event", count, rounds, bench_events(app, 1)))
        figures.append(timed("event/24", count, rounds, bench_events(app, 24)))
    finally:
        client = redis.Redis.from_url(broker)
        client.delete(queue, *client.keys("_kombu.binding.*benchPublishQ*"))
        client.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.publish", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--broker", default=DEFAULT_BROKER, help=f"a Redis db of its own (default {DEFAULT_BROKER})"
    )
    p.add_argument("--count", type=int, default=5000, help="operations per round (default 5000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the median is printed (default 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    figures = measure(args.broker, args.count, args.rounds)
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=2))
        return 0
    print(f"{'operation':<12} {'ops/s':>9} {'CPU µs/op':>10} {'Redis() /op':>12} {'conns /op':>10}")
    for f in figures:
        print(
            f"{f.op:<12} {f.ops_per_s:>9,.0f} {f.cpu_us:>10.1f} {f.clients_per_op:>12.2f} {f.connections_per_op:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
