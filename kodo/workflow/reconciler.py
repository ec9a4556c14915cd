"""The reconciler: republishes what Postgres says should run. Cheap, and safe on every worker at once.

It is a list of small passes run in one loop, each for this application version only:
0. `Admit`: admission of the limited queues (kodo.workflow.admission), for what no transaction
   rang; on the timer path, for the queues whose rate window reopened (`dbos.kodo_admit` records
   when, and announces it like a timer);
1. `WakeTimers`: due timers (durable sleep, receive timeouts, retry backoffs) are woken and published;
2. `ExpireDeadLeases`: leases held by dead processes on this host are expired at once (no wait for
   the lease to run out);
3. `RepublishStale`: runnable rows nobody picked up (lost message, lease expired) are republished.
   The claim that follows counts the recovery attempt and enforces the maximum;
4. `CancelExpired`: workflows past their timeout are cancelled (a runner stops at its next boundary);
5. `ScheduleTicks` (kodo.workflow.scheduler, when schedules are declared): starts every due tick of
   every schedule, exactly once, catching up missed ticks; a singleton pass.
Every update is atomic, so two reconcilers never publish the same due timer twice, and a duplicate
publish is a no-op delivery anyway. A pass that must run once across a fleet (a scheduler) declares
a `singleton` key: it runs only while its reconciler holds that Postgres advisory lock, so no leader
process is needed.

Timers are woken on time: parking sends `NOTIFY kodo_timer`, and the loop sleeps until the earliest
pending wake-up (or the next pass), whichever is sooner.

The broker is probed on every loop (`broker`, kodo.dispatch.BrokerProbe), every `BROKER_DOWN_POLL_S`
while it is down. When it answers again (or turns out to have restarted or been flushed: its queued
messages may be gone), `RepublishStale` publishes at once every unclaimed runnable row published
before, instead of waiting for each row's republish window; while it is down, nothing is published.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from kodo import clock
from kodo.config import Settings
from kodo.errors import ConflictError, UnknownWorkflowError
from kodo.queues import WORKER_QUEUES
from kodo.workflow import executor
from kodo.workflow.ports import Session, Store
from kodo.workflow.publisher import Bells, Publisher
from kodo.workflow.scheduler import Schedule, ScheduleTicks, StartTxn

log = logging.getLogger(__name__)
BATCH = 500
BROKER_DOWN_POLL_S = 0.1  # how often a down broker is probed (its recovery is seen this soon)
LOST_CONNECTION_RETRY_S = 0.2  # the loop's wait before reconnecting to the database


class BrokerWatch(Protocol):
    def check(self) -> Literal["up", "down", "reset"]:
        """`reset`: the broker answers, but did not (or restarted, or was flushed) since the last look."""


class Pass(Protocol):
    """One reconciler pass: does its work in `session`, adds what to publish to `bells`, returns a count."""

    name: ClassVar[str]
    singleton: ClassVar[int | None]  # an advisory lock key: run on one reconciler of the fleet at a time

    def run(self, session: Session, bells: Bells, now: int) -> int: ...


@dataclass
class WakeTimers:
    settings: Settings
    name: ClassVar[str] = "timers"
    singleton: ClassVar[int | None] = None

    def run(self, session: Session, bells: Bells, now: int) -> int:
        due = session.wake_due_timers(now, self.settings.app_version, BATCH)
        bells.add(*due)
        return len(due)


@dataclass
class ExpireDeadLeases:
    name: ClassVar[str] = "dead_leases"
    singleton: ClassVar[int | None] = None

    def run(self, session: Session, bells: Bells, now: int) -> int:
        dead = [
            r
            for r in session.leases_on_host(executor.host_prefix())
            if executor.is_local_and_dead(r["executor_id"])
        ]
        for r in dead:
            # published_at = 0 makes RepublishStale republish it in this same sweep
            session.expire_lease(r["workflow_uuid"], r["executor_id"], r["lease_epoch"], 0)
        return len(dead)


@dataclass
class RepublishStale:
    settings: Settings
    broker_reset: int = 0  # rows published before this (epoch ms) are due at once: see the docstring
    broker_down: bool = False
    name: ClassVar[str] = "republished"
    singleton: ClassVar[int | None] = None

    def run(self, session: Session, bells: Bells, now: int) -> int:
        if self.broker_down:
            return 0  # each publish would fail: the rows stay due until the broker answers
        stale = session.republish_stale(
            now, self.settings.app_version, BATCH, self.settings.republish_after_ms, self.broker_reset
        )
        bells.add(*stale)
        return len(stale)


@dataclass
class CancelExpired:
    settings: Settings
    cancel: Callable[[str], None]  # Client.cancel: cancels, runs the product hook, wakes a waiting parent
    name: ClassVar[str] = "timed_out"
    singleton: ClassVar[int | None] = None

    def run(self, session: Session, bells: Bells, now: int) -> int:
        cancelled = 0
        for workflow_id in session.expired_workflows(now, self.settings.app_version, BATCH):
            try:
                self.cancel(workflow_id)
                cancelled += 1
            except ConflictError:
                pass  # finished (or cancelled by someone else) meanwhile
            except UnknownWorkflowError:
                # Its product hook is not in this process: leave it to a reconciler that has it,
                # and go on with the others.
                log.warning("cannot cancel timed-out %s here: its workflow is not registered", workflow_id)
        return cancelled


@dataclass
class Admit:
    """Admit what the limits allow in the limited queues (kodo.workflow.admission): every queue on
    a sweep (a limit raised at run time, a row a worker at its cap gave back, a transaction that died
    before its admission), only those whose rate window reopened on the timer path (`due_only`).
    The pass marks the queues; the admission itself runs once, before its commit, in the publisher."""

    due_only: bool = False
    name: ClassVar[str] = "admission"
    singleton: ClassVar[int | None] = None

    def run(self, session: Session, bells: Bells, now: int) -> int:
        # Every worker queue: the publisher's admission keeps the limited ones (its cached list).
        queues = session.due_windows(now) if self.due_only else WORKER_QUEUES
        for queue in queues:
            bells.free(queue)
        return 0  # what it admits is rung (and counted by the broker's monitors) after the pass


@dataclass
class PassCounts:
    timers: int = 0
    dead_leases: int = 0
    republished: int = 0
    timed_out: int = 0
    scheduled: int = 0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        publisher: Publisher,
        passes: Sequence[Pass],
        broker: BrokerWatch | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.passes = list(passes)
        self.broker = broker
        self._republish = [p for p in self.passes if isinstance(p, RepublishStale)]
        self._timers = next((p for p in self.passes if isinstance(p, WakeTimers)), WakeTimers(settings))
        self._windows = Admit(due_only=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._born = clock.now_ms()
        self._probed = False

    @classmethod
    def standard(
        cls,
        settings: Settings,
        store: Store,
        publisher: Publisher,
        cancel: Callable[[str], None],
        *,
        start: StartTxn | None = None,
        schedules: Sequence[Schedule] = (),
        broker: BrokerWatch | None = None,
    ) -> Reconciler:
        """The standard passes; with `schedules`, the scheduler too (`start` is Client.start_txn)."""
        passes: list[Pass] = [
            Admit(),
            WakeTimers(settings),
            ExpireDeadLeases(),
            RepublishStale(settings),
            CancelExpired(settings, cancel),
        ]
        if schedules:
            if start is None:
                raise ValueError("a reconciler with schedules needs `start` (Client.start_txn)")
            passes.append(ScheduleTicks(settings, start, tuple(schedules)))
        return cls(settings, store, publisher, passes, broker)

    def run_pass(self, p: Pass, now: int | None = None) -> int:
        """Run one pass; publish what it made runnable once its work committed."""
        with (
            self.store.session() as s,
            # A singleton holds its lock for the pass's transaction; the others autocommit.
            self.publisher.commit_then_publish(s, atomic=p.singleton is not None) as bells,
        ):
            if p.singleton is not None and not s.try_singleton(p.singleton):
                return 0
            return p.run(s, bells, clock.now_ms() if now is None else now)

    def probe_broker(self) -> bool:
        """Probe the broker; True if it answers again (or lost its messages) and a sweep is due now."""
        if self.broker is None:
            return False
        state = self.broker.check()
        first, self._probed = not self._probed, True
        for p in self._republish:
            p.broker_down = state == "down"
            if state == "reset":
                # A first look ("reset": what a process that died before this one had reserved is
                # gone with it) republishes what was published before this reconciler began; a
                # later reset (the broker was away, restarted or flushed), all published until now.
                p.broker_reset = self._born if first else clock.now_ms()
        return state == "reset"

    @property
    def broker_down(self) -> bool:
        return any(p.broker_down for p in self._republish)

    def wake_timers(self) -> int:
        return self.run_pass(self._timers) + self.run_pass(self._windows)

    def sweep(self) -> PassCounts:
        """One full pass of every pass, in order."""
        counts = PassCounts()
        for p in self.passes:
            n = self.run_pass(p)
            if hasattr(counts, p.name):
                setattr(counts, p.name, n)
            elif n:
                log.info("reconciler pass %s: %d", p.name, n)
        if any(vars(counts).values()):
            log.info("reconciler pass: %s", counts)
        return counts

    # ---- background loop ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run_forever, name="kodo-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        interval_ms = self.settings.reconcile_interval_ms
        while not self._stop.is_set():
            try:
                self._loop(interval_ms)
            except Exception as exc:
                log.warning(
                    "reconciler lost its connection (%s); retrying in %ss", exc, LOST_CONNECTION_RETRY_S
                )
                self._stop.wait(LOST_CONNECTION_RETRY_S)

    def write_env_limits(self) -> None:
        """The environment's default queue limits (at start-up; an operator's stay)."""
        with self.store.session() as s:
            s.write_env_limits(self.settings.queue_limits, clock.now_ms())
        self.publisher.admission.forget()

    def _loop(self, interval_ms: int) -> None:
        self.write_env_limits()
        with self.store.listen_timers() as listener:
            next_sweep = 0
            while not self._stop.is_set():
                if self.probe_broker():
                    next_sweep = 0  # the broker is back: publish what waited for it now
                now = clock.now_ms()
                if now >= next_sweep:
                    self.sweep()
                    next_sweep = now + interval_ms
                else:
                    self.wake_timers()
                with self.store.session() as s:
                    due = s.next_wake_at(self.settings.app_version)
                wait_ms = max(min(due if due is not None else next_sweep, next_sweep) - clock.now_ms(), 0)
                if self.broker_down:
                    wait_ms = min(wait_ms, int(BROKER_DOWN_POLL_S * 1000))
                if wait_ms:
                    listener.wait(wait_ms / 1000)  # a NOTIFY (a new timer was parked) cuts it short
