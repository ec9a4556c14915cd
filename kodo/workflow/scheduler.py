"""Scheduled workflows: started by the clock once per interval across the fleet, missed ticks caught up.

Declare a schedule on top of a workflow that takes the tick time and the time it was started at:

    @wf.scheduled(every_ms=30_000)           # or every_ms=lambda settings: settings.some_interval_ms
    @wf.workflow(name="Reports.tick", queue=CONTROL_QUEUE)
    def tick(scheduled_ms: int, started_ms: int) -> None: ...

Ticks are the multiples of the interval since the epoch (30 s: at :00 and :30 of every minute, as a
`*/30 * * * * *` cron). The `ScheduleTicks` reconciler pass starts them, once each:

* **Exactly once per tick.** For every tick due since the schedule's newest tick it inserts the row
  `(schedule, tick)` into `dbos.schedule_ticks` (ON CONFLICT DO NOTHING) and, in the same
  transaction, the tick's workflow with the deterministic id `sched-<schedule>-<tick ms>`. A second
  scheduler finds the tick taken, and a crash between the two writes commits neither.
* **One scheduler at a time.** The pass is a singleton: it runs only on the reconciler that holds
  its advisory lock for that pass, so the fleet's reconcilers need no leader.
* **Catch-up.** After a downtime the ticks missed since the newest one are started, oldest first,
  at most `max_catch_up` of them (the latest); older missed ticks are skipped, with a warning. A
  schedule that never ticked starts with its latest due tick (no backfill before it existed).
* **Off.** A schedule whose interval is 0 is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, ParamSpec, Protocol, TypeVar

from kodo.config import Settings
from kodo.workflow.client import Started
from kodo.workflow.ports import Session
from kodo.workflow.publisher import Bells
from kodo.workflow.registry import WorkflowDef

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# pg_try_advisory_xact_lock key of the scheduler pass ("kodoSCHD"): one scheduler of the fleet at a time.
SCHEDULER_LOCK_KEY = 0x6B6F_646F_5343_4844
MAX_CATCH_UP = 100  # missed ticks started after a downtime, at most (per schedule)

Interval = int | Callable[[Settings], int]


class StartTxn(Protocol):
    """`Client.start_txn`: insert a workflow row in the caller's open transaction."""

    def __call__(
        self,
        conn: Any,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        **options: Any,
    ) -> Started: ...


@dataclass(frozen=True)
class Schedule:
    """A workflow started every `every` ms (an int, or read from the Settings; 0 = off)."""

    name: str  # stable: the key of its ticks in dbos.schedule_ticks and part of their workflow ids
    workflow: WorkflowDef[..., Any]
    every: Interval
    max_catch_up: int = MAX_CATCH_UP

    def interval_ms(self, settings: Settings) -> int:
        return self.every(settings) if callable(self.every) else self.every

    def workflow_id(self, tick_ms: int) -> str:
        return f"sched-{self.name}-{tick_ms}"


class Schedules:
    """The schedules declared in this process (by importing the workflow modules)."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}

    def add(self, schedule: Schedule) -> None:
        existing = self._schedules.get(schedule.name)
        if existing is not None and existing.workflow.fn is not schedule.workflow.fn:
            raise ValueError(f"schedule {schedule.name!r} is declared twice")
        self._schedules[schedule.name] = schedule

    def all(self) -> tuple[Schedule, ...]:
        return tuple(self._schedules[name] for name in sorted(self._schedules))


SCHEDULES = Schedules()


def scheduled(
    every_ms: Interval, *, name: str | None = None, max_catch_up: int = MAX_CATCH_UP
) -> Callable[[WorkflowDef[P, R]], WorkflowDef[P, R]]:
    """Declare a schedule for a registered workflow (see the module docstring); the schedule's name
    defaults to the workflow's. The workflow is called with (tick epoch ms, start epoch ms)."""
    if max_catch_up < 1:
        raise ValueError("max_catch_up must be >= 1")

    def deco(wf: WorkflowDef[P, R]) -> WorkflowDef[P, R]:
        SCHEDULES.add(Schedule(name or wf.name, wf, every_ms, max_catch_up))
        return wf

    return deco


def due_ticks(last: int | None, now: int, every_ms: int, max_catch_up: int = MAX_CATCH_UP) -> list[int]:
    """The ticks to start at `now`, oldest first: the multiples of `every_ms` after `last` and not
    after `now`, at most the latest `max_catch_up`; without a `last`, only the latest due tick."""
    if every_ms <= 0:
        return []
    latest = now - now % every_ms
    if last is None:
        return [latest]
    first = last - last % every_ms + every_ms  # the next tick after `last` (even if the interval changed)
    first = max(first, latest - (max_catch_up - 1) * every_ms)
    return list(range(first, latest + 1, every_ms))


@dataclass
class ScheduleTicks:
    """The scheduler as a reconciler pass (singleton): start every due tick of every schedule."""

    settings: Settings
    start: StartTxn
    schedules: tuple[Schedule, ...]
    name: ClassVar[str] = "scheduled"
    singleton: ClassVar[int | None] = SCHEDULER_LOCK_KEY

    def run(self, session: Session, bells: Bells, now: int) -> int:
        started = 0
        for schedule in self.schedules:
            every = schedule.interval_ms(self.settings)
            if every <= 0:
                continue
            last = session.last_schedule_tick(schedule.name)
            due = due_ticks(last, now, every, schedule.max_catch_up)
            if last is not None and due:
                skipped = (due[0] - last) // every - 1
                if skipped > 0:
                    log.warning(
                        "schedule %s: %d missed tick(s) before %d skipped (catch-up is at most %d)",
                        schedule.name,
                        skipped,
                        due[0],
                        schedule.max_catch_up,
                    )
            for tick_ms in due:
                started += self._start_tick(session, bells, schedule, tick_ms, now)
        return started

    def _start_tick(self, session: Session, bells: Bells, schedule: Schedule, tick_ms: int, now: int) -> int:
        """Claim the tick and start its workflow, both or neither (a savepoint of the pass's
        transaction; a transaction of its own if the pass runs without one)."""
        workflow_id = schedule.workflow_id(tick_ms)
        with session.transaction():
            if not session.insert_schedule_tick(schedule.name, tick_ms, workflow_id, now):
                return 0  # another scheduler started it
            s = self.start(session.handle, schedule.workflow, (tick_ms, now), {}, workflow_id=workflow_id)
        bells.add(*s.doorbells)
        return 1
