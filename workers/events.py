"""Task events follow Flower: on while a monitor watches, off (free) while none does.

Celery task events cost one broker publish each, so kodo's workers start without them. Flower used to
switch them on by a broadcast every 5 s, so a worker that came up while Flower ran sent nothing for
its first seconds, and its first tasks never showed. Now the monitor (`workers.flower`) holds a
Postgres advisory lock while it runs (`kodo.db.monitor`), and each worker's main process:

* checks the lock when it becomes ready, before it handles its first message, and switches its task
  events on if a monitor watches;
* checks it again every `interval_s` and follows its changes: on when a monitor appears (even one
  whose broadcast it missed), off when the last one is gone (even after a kill -9 of Flower).

It toggles the event group exactly as Celery's `enable_events`/`disable_events` remote commands do,
and only on a change of the lock, so a Flower started without the lock (plain `celery flower`)
still works as before. A worker started with `-E` sends every event group and is left alone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kodo.db import monitor
from kodo.db.pool import Conn

log = logging.getLogger("kodo.worker.events")
TASK_GROUP = "task"


class EventsFollowMonitor:
    def __init__(self, dispatcher: Any, database_url: str, interval_s: float = 2.0) -> None:
        self.dispatcher = dispatcher  # the consumer's celery.events.EventDispatcher
        self.database_url = database_url
        self.interval_s = interval_s
        self._conn: Conn | None = None
        self._last: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check now (before the first task), then follow in a daemon thread."""
        self.sync()
        self._thread = threading.Thread(target=self._run, name="kodo-events-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync()

    def sync(self) -> None:
        watching = self._watching()
        if watching is None or watching == self._last:
            return
        if watching:
            self._enable()
            log.info("task events on: a monitor (Flower) watches")
        elif self._last is not None:  # only a monitor that was seen going away switches events off
            self._disable()
            log.info("task events off: no monitor watches")
        self._last = watching

    def _watching(self) -> bool | None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = monitor.connect_for_checks(self.database_url)
            return monitor.watching(self._conn)
        except Exception as exc:  # the database is away: keep the current state, retry later
            log.debug("monitor check failed: %s", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None

    def _enable(self) -> None:
        groups = self.dispatcher.groups
        if groups and TASK_GROUP not in groups:  # empty: every group is sent already (-E)
            groups.add(TASK_GROUP)

    def _disable(self) -> None:
        groups = self.dispatcher.groups
        if TASK_GROUP in groups and len(groups) > 1:
            groups.discard(TASK_GROUP)
