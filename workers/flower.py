"""Flower for kodo: `python -m workers.flower [flower options]` (the Procfile's `flower`).

It runs `celery -A workers.flower_app flower` in this process (kodo's Celery settings without the
workers' modules), after two things plain Flower does not do:

* it holds the monitor lock (`kodo.db.monitor`) for its whole life, so every worker sends task
  events from its first task while Flower runs, including a worker that starts later, and stops
  sending them once Flower is gone (`workers.events`);
* it switches the running workers' task events on at once, instead of after Flower's first 5 s
  `enable_events` broadcast.

Authentication is Flower's own: FLOWER_BASIC_AUTH (`user:password[,user:password]`, validated by
`kodo.config` so a malformed value stops start-up; Flower reads it from the environment, so the
password never appears in a process list). Without it Flower's HTTP API answers 401 unless
FLOWER_UNAUTHENTICATED_API=true.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

from kodo.config import Settings
from kodo.db import monitor

log = logging.getLogger("kodo.flower")
KEEP_S = 5.0  # how often the monitor lock is checked (and taken again after a database restart)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()  # a bad FLOWER_BASIC_AUTH (or any bad value) stops start-up here
    from celery.bin.celery import celery

    from workers.flower_app import app

    watch = monitor.Watch(settings.database_url)
    stopping = threading.Event()

    def keep() -> None:
        while not stopping.wait(KEEP_S):
            try:
                watch.keep()
            except Exception as exc:  # the database is away: the workers' events go off until it is back
                log.warning("monitor lock lost: %s", exc)

    threading.Thread(target=keep, name="kodo-monitor-lock", daemon=True).start()

    def release() -> None:
        stopping.set()
        watch.close()
        try:
            with monitor.connect_for_checks(settings.database_url) as conn:
                if monitor.watching(conn):
                    return  # another Flower still watches
            app.control.disable_events()
        except Exception as exc:  # the workers switch their events off on their own within seconds
            log.warning("could not switch task events off: %s", exc)

    atexit.register(release)
    app.control.enable_events()
    return int(
        celery.main(
            args=["-A", "workers.flower_app", "flower", *args], prog_name="celery", standalone_mode=False
        )
        or 0
    )


if __name__ == "__main__":
    sys.exit(main())
