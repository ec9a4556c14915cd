"""The scheduler on Postgres (contract-api §10): the scheduled tick with a short interval run by real
workers, its product rows (run `sched-<ms>`, the `ScheduledTick` artifact set), catch-up of the
ticks missed while every worker was down, and concurrent schedulers that never start a tick twice
(with the singleton lock, and with only the tick's unique key)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from kodo import clock
from kodo.intent import timewf
from kodo.intent.projections import iso
from kodo.runtime import Runtime
from kodo.workflow.reconciler import Reconciler
from kodo.workflow.scheduler import Schedule, ScheduleTicks
from tests.support.helpers import Sql, poll

EVERY_MS = 1000
TICK = timewf.TICK_WORKFLOW
KINDS = ["artifact_index", "timings", "raw", "stderr", "stdout"]


def ledger(sql: Sql, name: str = TICK) -> list[dict[str, Any]]:
    return sql(
        "SELECT tick_epoch_ms, workflow_uuid, created_at_epoch_ms FROM dbos.schedule_ticks "
        "WHERE schedule_name = %s ORDER BY tick_epoch_ms",
        (name,),
    )


def assert_contiguous(ticks: list[int], every: int) -> None:
    assert ticks, "no tick"
    assert ticks == list(range(ticks[0], ticks[-1] + 1, every)), f"a gap or a duplicate: {ticks}"


@pytest.fixture
def fresh_schedule(sql: Sql) -> Iterator[None]:
    """The product schedule starts without history (its newest tick is where catch-up starts)."""
    sql("DELETE FROM dbos.schedule_ticks WHERE schedule_name = %s", (TICK,))
    yield
    sql("DELETE FROM dbos.schedule_ticks WHERE schedule_name = %s", (TICK,))


def test_ticks_run_every_interval_and_missed_ones_are_caught_up(
    rt: Runtime, sql: Sql, start_worker: Callable[..., Any], fresh_schedule: None
) -> None:
    tick_env = {"KODO_SCHEDULE_TICK_MS": str(EVERY_MS)}
    # Two workers: two embedded reconcilers, so two schedulers race for every tick.
    workers = [
        start_worker(queues="controlQ", concurrency=1, env=tick_env),
        start_worker(queues="controlQ", concurrency=1, env=tick_env),
    ]
    poll(lambda: len(ledger(sql)) >= 4, 20, "four ticks")
    for w in workers:
        w.kill9()
    down_at = clock.now_ms()
    before = [int(t["tick_epoch_ms"]) for t in ledger(sql)]
    assert_contiguous(before, EVERY_MS)
    time.sleep(3.5 * EVERY_MS / 1000)  # three or four ticks are missed
    assert [int(t["tick_epoch_ms"]) for t in ledger(sql)] == before  # nobody ticks meanwhile

    start_worker(queues="controlQ", concurrency=1, env=tick_env)
    back_at = clock.now_ms()
    poll(lambda: int(ledger(sql)[-1]["tick_epoch_ms"]) >= back_at, 20, "a tick after the restart")
    ticks = ledger(sql)
    all_ticks = [int(t["tick_epoch_ms"]) for t in ticks]
    assert_contiguous(all_ticks, EVERY_MS)  # the downtime's ticks are there: caught up, once each
    missed = [t for t in ticks if down_at < int(t["tick_epoch_ms"]) < back_at - EVERY_MS]
    assert len(missed) >= 2
    # Started late, after the downtime (not at their own instant by a scheduler nobody stopped).
    assert all(int(t["created_at_epoch_ms"]) >= down_at + 3000 for t in missed)

    ids = [str(t["workflow_uuid"]) for t in ticks]
    assert ids == [f"sched-{TICK}-{t}" for t in all_ticks]
    poll(
        lambda: all(
            r["status"] == "SUCCESS"
            for r in sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,))
        ),
        20,
        "every tick's workflow succeeded",
    )
    rows = sql(
        "SELECT workflow_uuid, name, queue_name, status FROM dbos.workflow_status WHERE name = %s", (TICK,)
    )
    assert sorted(r["workflow_uuid"] for r in rows) == sorted(ids)  # one workflow per tick, no other
    assert {(r["queue_name"], r["status"]) for r in rows} == {("controlQ", "SUCCESS")}

    # The product rows of every tick: the run sched-<ms> (succeeded) and five artifacts.
    runs = sql(
        "SELECT id, intent_id, workflow_id, status FROM app.runs WHERE id = ANY(%s) ORDER BY id",
        ([f"sched-{t}" for t in all_ticks],),
    )
    assert [(r["id"], r["workflow_id"], r["intent_id"], r["status"]) for r in runs] == sorted(
        (f"sched-{t}", f"sched-{t}", "scheduled-ops", "succeeded") for t in all_ticks
    )
    assert sql("SELECT goal FROM app.intents WHERE id = 'scheduled-ops'") == [{"goal": "Scheduled Ops"}]
    arts = sql(
        "SELECT run_id, idx, kind, task_key, attempt, inline FROM app.artifacts "
        "WHERE step_id = 'ScheduledTick' AND run_id = ANY(%s) ORDER BY run_id, idx",
        ([f"sched-{t}" for t in all_ticks],),
    )
    assert len(arts) == 5 * len(all_ticks)
    for t in all_ticks:
        mine = [a for a in arts if a["run_id"] == f"sched-{t}"]
        assert [(a["idx"], a["kind"], a["task_key"], a["attempt"]) for a in mine] == [
            (i, k, "", 1) for i, k in enumerate(KINDS)
        ]
        when = iso(datetime.fromtimestamp(t / 1000, tz=UTC))
        assert mine[4]["inline"] == {"text": f"Tick for {when}"}
        assert mine[2]["inline"]["json"]["schedTime"] == when


class Unlocked(ScheduleTicks):
    """The pass without its singleton lock: only the tick's primary key guards it."""

    singleton: ClassVar[int | None] = None


@pytest.mark.parametrize("pass_type", [ScheduleTicks, Unlocked], ids=["singleton", "unique-key-only"])
def test_concurrent_schedulers_never_start_a_tick_twice(
    rt: Runtime, sql: Sql, pass_type: type[ScheduleTicks]
) -> None:
    """Four reconcilers (four connections, as on four hosts) run the scheduler as fast as they can
    for a few intervals: every tick is started once, and none is missed."""
    schedule = Schedule(f"it.sched.{uuid.uuid4().hex[:8]}", timewf.tick, 200)  # 200 ms: many ticks
    stop = threading.Event()
    errors: list[BaseException] = []
    started = [0] * 4

    def scheduler(n: int) -> None:
        p = pass_type(rt.settings, rt.client.start_txn, (schedule,))
        rec = Reconciler(rt.settings, rt.store, rt.engine.publisher, [p])
        try:
            while not stop.is_set():
                started[n] += rec.run_pass(p)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    ticks = [int(t["tick_epoch_ms"]) for t in ledger(sql, schedule.name)]
    assert len(ticks) >= 5
    assert_contiguous(ticks, 200)
    assert sum(started) == len(ticks)  # each tick counted by the one scheduler that started it
    rows = sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid LIKE %s ORDER BY workflow_uuid",
        (f"sched-{schedule.name}-%",),
    )
    assert [r["workflow_uuid"] for r in rows] == sorted(schedule.workflow_id(t) for t in ticks)
