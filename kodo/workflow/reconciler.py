"""The reconciler: republishes what Postgres says should run. Cheap, and safe on every worker at once.

Each pass, for this application version only:
1. due timers (durable sleep, receive timeouts) are woken and published;
2. leases held by dead processes on this host are expired at once (no wait for the lease to run out);
3. runnable rows nobody picked up (lost message, lease expired) are republished. The claim that
   follows counts the recovery attempt and enforces the maximum;
4. workflows past their timeout are cancelled (a runner stops at its next step boundary).
Every update is atomic, so two reconcilers never publish the same due timer twice, and a duplicate
publish is a no-op delivery anyway.

Timers are woken on time: parking sends `NOTIFY kodo_timer`, and the loop sleeps until the earliest
pending wake-up (or the next pass), whichever is sooner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from kodo import clock
from kodo.config import Settings
from kodo.db.pool import Database, connect
from kodo.db.queries import Q
from kodo.dispatch import Dispatcher
from kodo.errors import ConflictError
from kodo.workflow import executor

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class PassCounts:
    timers: int = 0
    dead_leases: int = 0
    republished: int = 0
    timed_out: int = 0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        dispatcher: Dispatcher,
        cancel: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.dispatcher = dispatcher
        self.cancel = cancel  # Client.cancel: cancels and wakes a waiting parent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _publish(self, rows: list[dict[str, str]]) -> None:
        for row in rows:
            try:
                self.dispatcher.publish(row["workflow_uuid"], row["queue_name"])
            except Exception:
                log.warning("republish of %s failed; next pass retries", row["workflow_uuid"], exc_info=True)

    def wake_timers(self) -> int:
        with self.db.conn() as c:
            rows = c.execute(
                Q["wake_due_timers"],
                {"now": clock.now_ms(), "app_version": self.settings.app_version, "limit": BATCH},
            ).fetchall()
        self._publish(rows)
        return len(rows)

    def sweep(self) -> PassCounts:
        """One full pass (timers, dead local leases, stale runnable rows)."""
        counts = PassCounts(timers=self.wake_timers())
        now = clock.now_ms()
        with self.db.conn() as c:
            dead = [
                r
                for r in c.execute(Q["leases_on_host"], {"host_prefix": executor.host_prefix()}).fetchall()
                if executor.is_local_and_dead(r["executor_id"])
            ]
            for r in dead:
                c.execute(
                    Q["expire_lease"],
                    {
                        "workflow_uuid": r["workflow_uuid"],
                        "executor_id": r["executor_id"],
                        # published_at = 0 makes the sweep below republish it in this same pass
                        "epoch": r["lease_epoch"],
                        "now": 0,
                    },
                )
            counts.dead_leases = len(dead)
            stale = c.execute(
                Q["republish_stale"],
                {
                    "now": now,
                    "app_version": self.settings.app_version,
                    "limit": BATCH,
                    "republish_after": self.settings.republish_after_ms,
                },
            ).fetchall()
        self._publish(stale)
        counts.republished = len(stale)
        counts.timed_out = self.cancel_expired(now)
        if counts.timers or counts.dead_leases or counts.republished or counts.timed_out:
            log.info("reconciler pass: %s", counts)
        return counts

    def cancel_expired(self, now: int) -> int:
        if self.cancel is None:
            return 0
        with self.db.conn() as c:
            rows = c.execute(
                Q["expired_workflows"], {"now": now, "app_version": self.settings.app_version, "limit": BATCH}
            ).fetchall()
        cancelled = 0
        for row in rows:
            try:
                self.cancel(row["workflow_uuid"])
                cancelled += 1
            except ConflictError:
                pass  # finished (or cancelled by someone else) meanwhile
        return cancelled

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
            except (psycopg.Error, OSError):
                log.warning("reconciler lost its connection; retrying in 1s", exc_info=True)
                self._stop.wait(1.0)

    def _loop(self, interval_ms: int) -> None:
        with connect(self.settings.database_url) as listen:
            listen.execute("LISTEN kodo_timer")
            next_sweep = 0
            while not self._stop.is_set():
                now = clock.now_ms()
                if now >= next_sweep:
                    self.sweep()
                    next_sweep = now + interval_ms
                else:
                    self.wake_timers()
                with self.db.conn() as c:
                    row = c.execute(Q["next_wake_at"], {"app_version": self.settings.app_version}).fetchone()
                due = row["wake_at"] if row and row["wake_at"] is not None else next_sweep
                wait_ms = max(min(int(due), next_sweep) - clock.now_ms(), 0)
                if wait_ms:
                    # A NOTIFY (a new timer was parked) cuts the wait short.
                    for _ in listen.notifies(timeout=wait_ms / 1000, stop_after=1):
                        pass
