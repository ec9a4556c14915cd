"""Admission: only admitted rows of a limited queue get a doorbell.

A queue is limited when it has a `dbos.queue_limits` row (concurrency caps, rate windows, priority,
per-partition overrides; see `kodo.db` migration 0010 and the README's flow-control section). A
transaction that makes rows of a limited queue runnable, or frees a slot of one (a workflow parks,
ends or is cancelled), asks the store to admit what the limits allow before it commits: one
statement, under a per-queue lock, that returns the doorbells to ring. `Publisher` calls it, so
every transition goes through it once; the reconciler's `Admit` pass covers what no transaction
rings (a rate window that reopens, a limit raised at run time, a row a worker at its cap gave back).
Two shortcuts keep the common case free: a new row with room and nothing else waiting is admitted
by its own INSERT (`insert`), and an end that saw nothing waiting frees its slot without admission.

Which queues are limited is read at most once a second per process (`REFRESH_MS`): a limit set at
run time applies everywhere within a second. Until then a stale "unlimited" only publishes a doorbell
that the claim refuses (a limited row is claimable once admitted) and the `Admit` pass admits it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kodo import clock
from kodo.records import Doorbell, NewWorkflow
from kodo.workflow.ports import Session

REFRESH_MS = 1000


class Admission:
    def __init__(self, app_version: str) -> None:
        self.app_version = app_version
        self._limited: frozenset[str] = frozenset()
        self._read_at = -REFRESH_MS
        self._lock = threading.Lock()

    def limited(self, session: Session) -> frozenset[str]:
        """The limited queues, read again when the last read is a second old."""
        now = clock.monotonic_ms()
        if now - self._read_at >= REFRESH_MS:
            limited = session.limited_queues()
            with self._lock:
                self._limited, self._read_at = limited, now
        return self._limited

    def forget(self) -> None:
        """Read the limited queues again at the next admission (after a limit changed here)."""
        self._read_at = -REFRESH_MS

    def insert(self, session: Session, new: NewWorkflow, now: int) -> Doorbell | None:
        """Insert a workflow row; a limited queue's row of this version is admitted by the INSERT
        itself when it has room and nothing else waits (its doorbell says `admitted`: no admission
        statement follows). Like `admit`, it admits only this version's rows: another version's
        wait for a worker (and an admission) of their own."""
        admit = new.app_version == self.app_version and new.queue in self.limited(session)
        return session.insert_workflow(new, now, admit=admit)

    def admit(self, session: Session, bells: list[Doorbell], freed: Iterable[str]) -> list[Doorbell]:
        """The doorbells to ring instead of `bells`: those of unlimited queues and those admitted
        already as they are, and for each limited queue with other bells or a freed slot, what its
        admission returns."""
        freed = set(freed)
        queues = {b.queue for b in bells if not b.admitted} | freed
        if not queues:
            return bells
        limited = self.limited(session) & queues
        if not limited:
            return bells
        out = [b for b in bells if b.admitted or b.queue not in limited]
        now = clock.now_ms()
        for queue in sorted(limited):  # a fixed order: two transactions never wait on each other's lock
            hints = [b.workflow_id for b in bells if b.queue == queue and not b.admitted]
            out.extend(session.admit(queue, self.app_version, now, hints))
        return out
