"""The scheduler (kodo.workflow.scheduler) against the in-memory store: which ticks are due, each tick
started exactly once in the transaction that claims it, catch-up after a downtime (bounded), and no
duplicate with two reconcilers (the singleton lock, and the tick's unique key without it)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from kodo import clock
from kodo import workflow as wf
from kodo.states import OutcomeKind
from kodo.workflow import scheduler
from kodo.workflow.reconciler import Reconciler
from kodo.workflow.scheduler import Schedule, Schedules, ScheduleTicks, due_ticks
from tests.support.memstore import Fake, FakeClock, MemorySession, make_engine

T0 = 1_700_000_000_000  # a multiple of every interval below
EVERY = 1000


@pytest.fixture(scope="session", autouse=True)
def _fresh_database() -> Iterator[None]:
    """Overrides the autouse fixture of tests/conftest.py: these tests need neither Postgres nor Redis."""
    yield


@pytest.fixture
def clk(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock(T0 + 300)
    monkeypatch.setattr(clock, "now_ms", c)
    return c


@pytest.fixture
def fake(clk: FakeClock) -> Iterator[Fake]:
    f = make_engine()
    yield f
    assert f.dispatcher.during_transaction == [], "a doorbell rang before its transaction committed"
    assert not f.store.in_transaction()


@wf.transaction(name="fake.sched.record")
def record(conn: MemorySession, tick_ms: int, started_ms: int) -> int:
    conn.product.setdefault("ticks", []).append((tick_ms, started_ms))  # the tick's product effect
    return tick_ms


@wf.workflow(name="fake.sched.tick", queue="controlQ")
def tick(tick_ms: int, started_ms: int) -> int:
    return record(tick_ms, started_ms)


def schedule(name: str = "fake.sched", every: int = EVERY, max_catch_up: int = 100) -> Schedule:
    # Built directly, not with @wf.scheduled: the process-wide SCHEDULES stay untouched.
    return Schedule(name, tick, every, max_catch_up)


def ticks_pass(fake: Fake, *schedules: Schedule) -> ScheduleTicks:
    return ScheduleTicks(fake.engine.settings, fake.client.start_txn, schedules)


def ledger(fake: Fake, name: str = "fake.sched") -> list[int]:
    return [int(t["tick_epoch_ms"]) for t in fake.store.schedule_ticks(name)]


def run_ticks(fake: Fake) -> list[tuple[int, int]]:
    """Deliver everything published (as the workers would); the product effects, in order."""
    for _, outcome in fake.dispatcher.deliver(fake.engine):
        assert outcome.kind is OutcomeKind.SUCCESS
    return list(fake.store.product.get("ticks", []))


# ---- which ticks are due -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "now", "every", "cap", "expected"),
    [
        (None, 10_500, 1000, 100, [10_000]),  # a new schedule: its latest due tick, no backfill
        (None, 10_000, 1000, 100, [10_000]),  # a tick is due at its own instant
        (10_000, 10_999, 1000, 100, []),  # nothing new yet
        (10_000, 11_000, 1000, 100, [11_000]),
        (10_000, 15_200, 1000, 100, [11_000, 12_000, 13_000, 14_000, 15_000]),  # catch-up, oldest first
        (10_000, 20_000, 1000, 3, [18_000, 19_000, 20_000]),  # bounded: the latest `cap` only
        (60_000, 75_000, 7000, 100, [63_000, 70_000]),  # the interval changed: next multiple after last
        (10_000, 9_000, 1000, 100, []),  # a clock behind the newest tick starts nothing
        (None, 10_500, 0, 100, []),  # off
    ],
)
def test_due_ticks(last: int | None, now: int, every: int, cap: int, expected: list[int]) -> None:
    assert due_ticks(last, now, every, cap) == expected


# ---- the pass ------------------------------------------------------------------------------------


def test_each_tick_starts_its_workflow_once_and_missed_ticks_are_caught_up(
    fake: Fake, clk: FakeClock
) -> None:
    store, dispatcher = fake.store, fake.dispatcher
    rec = fake.reconciler(schedules=[schedule()])
    assert rec.sweep().scheduled == 1
    wid = f"sched-fake.sched-{T0}"
    assert store.row(wid)["name"] == "fake.sched.tick"
    assert store.row(wid)["queue_name"] == "controlQ"
    assert dispatcher.published == [(wid, "controlQ")]  # rung after the commit (checked by the fixture)
    assert run_ticks(fake) == [(T0, T0 + 300)]

    assert rec.sweep().scheduled == 0  # same interval: nothing new
    clk.advance(700)  # T0 + 1000: the next tick is due at its own instant
    assert rec.sweep().scheduled == 1
    assert ledger(fake) == [T0, T0 + 1000]

    clk.advance(4600)  # down for 4.6 intervals (T0 + 5600): three ticks missed, the fourth due
    assert rec.sweep().scheduled == 4
    expected = [T0 + k * EVERY for k in range(6)]
    assert ledger(fake) == expected
    effects = run_ticks(fake)
    assert [t for t, _ in effects] == expected  # oldest first, no gap, no duplicate
    assert all(started == T0 + 5600 for _, started in effects[2:])  # started together, at catch-up
    assert [t["workflow_uuid"] for t in store.schedule_ticks("fake.sched")] == [
        f"sched-fake.sched-{t}" for t in expected
    ]
    assert run_ticks(fake) == effects  # delivered again: no tick runs twice


def test_catch_up_is_bounded_and_says_what_it_skipped(
    fake: Fake, clk: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rec = fake.reconciler(schedules=[schedule(max_catch_up=3)])
    rec.sweep()
    clk.advance(10 * EVERY)  # ten intervals down
    with caplog.at_level(logging.WARNING, logger="kodo.workflow.scheduler"):
        assert rec.sweep().scheduled == 3
    assert ledger(fake) == [T0, T0 + 8000, T0 + 9000, T0 + 10_000]
    assert "7 missed tick(s)" in caplog.text
    assert [t for t, _ in run_ticks(fake)] == ledger(fake)


def test_a_schedule_with_interval_zero_is_off(fake: Fake) -> None:
    rec = fake.reconciler(schedules=[schedule(every=0)])
    assert rec.sweep().scheduled == 0
    assert ledger(fake) == [] and fake.store.rows() == []


def test_the_interval_can_come_from_the_settings(clk: FakeClock) -> None:
    fake = make_engine(env={"KODO_SCHEDULE_TICK_MS": "5000"})
    every_setting = Schedule("fake.sched", tick, lambda s: s.schedule_tick_ms)
    assert every_setting.interval_ms(fake.engine.settings) == 5000
    rec = fake.reconciler(schedules=[every_setting])
    rec.sweep()
    clk.advance(9700)  # T0 + 10000
    rec.sweep()
    assert ledger(fake) == [T0, T0 + 5000, T0 + 10_000]
    assert make_engine(env={"KODO_SCHEDULE_TICK_MS": "0"}).reconciler(schedules=[every_setting]).sweep() == (
        make_engine().reconciler().sweep()
    )


def test_a_crash_between_claiming_a_tick_and_starting_it_loses_neither(fake: Fake) -> None:
    """The tick row and its workflow commit together: a failure in between rolls both back, and the
    next pass starts the tick."""
    rec = fake.reconciler(schedules=[schedule()])

    def crash() -> None:
        raise ConnectionError("the database went away")

    fake.store.before("insert_workflow", crash)
    with pytest.raises(ConnectionError):
        rec.sweep()
    assert ledger(fake) == [] and fake.store.rows() == []
    assert fake.dispatcher.published == []
    assert rec.sweep().scheduled == 1
    assert ledger(fake) == [T0]
    assert [t for t, _ in run_ticks(fake)] == [T0]


def test_two_reconcilers_never_start_a_tick_twice(fake: Fake, clk: FakeClock) -> None:
    """The singleton: a second reconciler's pass, run while the first one's holds the lock, does
    nothing; run after it, it finds every due tick taken."""
    engine, store = fake.engine, fake.store
    first_pass, second_pass = ticks_pass(fake, schedule()), ticks_pass(fake, schedule())
    first = Reconciler(engine.settings, store, engine.publisher, [first_pass])
    second = Reconciler(engine.settings, store, engine.publisher, [second_pass])
    first.run_pass(first_pass)
    clk.advance(3 * EVERY)
    seen: list[int] = []
    store.before("insert_schedule_tick", lambda: seen.append(second.run_pass(second_pass)))
    assert first.run_pass(first_pass) == 3
    assert seen == [0]  # skipped: the first one held the scheduler's lock
    assert second.run_pass(second_pass) == 0  # after it: nothing left to start
    assert ledger(fake) == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    assert [t for t, _ in run_ticks(fake)] == ledger(fake)


class Unlocked(ScheduleTicks):
    """The pass without its singleton lock: only the ticks' unique key guards them."""

    singleton: ClassVar[int | None] = None


def test_without_the_lock_the_tick_key_still_prevents_a_duplicate(fake: Fake, clk: FakeClock) -> None:
    """Two schedulers that computed the same due ticks: the second to claim a tick finds it taken
    (ON CONFLICT DO NOTHING) and starts nothing."""
    engine, store = fake.engine, fake.store
    settings, start = engine.settings, fake.client.start_txn
    first_pass = Unlocked(settings, start, (schedule(),))
    second_pass = Unlocked(settings, start, (schedule(),))
    first = Reconciler(settings, store, engine.publisher, [first_pass])
    second = Reconciler(settings, store, engine.publisher, [second_pass])
    seen: list[int] = []
    # The second one runs after the first read the newest tick and before it claims any.
    store.before("insert_schedule_tick", lambda: seen.append(second.run_pass(second_pass)))
    assert first.run_pass(first_pass) == 0  # its tick was taken meanwhile
    assert seen == [1]
    assert ledger(fake) == [T0]
    assert [r["workflow_uuid"] for r in store.rows()] == [f"sched-fake.sched-{T0}"]
    assert [t for t, _ in run_ticks(fake)] == [T0]
    # The second one rang its doorbell after its own commit, while the first one's transaction was
    # still open: two processes in production, one thread here. Nothing else rang early.
    assert fake.dispatcher.during_transaction == [(f"sched-fake.sched-{T0}", "controlQ")]
    fake.dispatcher.during_transaction.clear()


def test_scheduled_declares_a_schedule_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Schedules()
    monkeypatch.setattr(scheduler, "SCHEDULES", registry)
    assert wf.scheduled(2000)(tick) is tick
    [declared] = registry.all()
    assert (declared.name, declared.workflow, declared.every) == ("fake.sched.tick", tick, 2000)
    assert declared.workflow_id(T0) == f"sched-fake.sched.tick-{T0}"
    wf.scheduled(2000)(tick)  # the same workflow again (a module imported twice): one schedule
    assert len(registry.all()) == 1

    def other(tick_ms: int, started_ms: int) -> Any:
        return None

    with pytest.raises(ValueError, match="declared twice"):
        registry.add(Schedule("fake.sched.tick", wf.workflow(name="fake.sched.other")(other), 1000))
    with pytest.raises(ValueError, match="max_catch_up"):
        wf.scheduled(1000, max_catch_up=0)


def test_the_standard_reconciler_needs_start_for_its_schedules(fake: Fake) -> None:
    engine = fake.engine
    with pytest.raises(ValueError, match="needs `start`"):
        Reconciler.standard(
            engine.settings, fake.store, engine.publisher, cancel=fake.client.cancel, schedules=[schedule()]
        )
    names = [p.name for p in fake.reconciler(schedules=[schedule()]).passes]
    assert names == ["admission", "timers", "dead_leases", "republished", "timed_out", "scheduled"]
    assert "scheduled" not in [p.name for p in fake.reconciler().passes]
