"""Whether a monitor (Flower) watches the workers, so they send Celery task events only then.

The monitor holds a shared Postgres advisory lock on a connection of its own for its whole life
(`hold`); Postgres drops it when that connection ends, however the process ended. Workers ask
`watching()` when they come up and every few seconds after (`workers.celery_app`). Postgres, not the
broker, carries the flag, so it works the same with Redis and RabbitMQ.
"""

from __future__ import annotations

from kodo.db.pool import Conn, connect
from kodo.db.queries import Q

# The two-int advisory lock key: ("kodo" as an int4, 1 = the task-event monitor).
_KEY = {"space": 0x6B6F646F, "key": 1}


def hold(database_url: str) -> Conn:
    """Take the monitor lock on a new connection; it is held until that connection is closed."""
    conn = connect(database_url, connect_timeout=5)
    row = conn.execute(Q["monitor_hold"], _KEY).fetchone()
    if row is None or not row["held"]:  # only an exclusive holder could refuse; none takes it
        conn.close()
        raise RuntimeError("could not take the monitor lock")
    return conn


class Watch:
    """The monitor lock for a monitor's whole life: `keep()` (every few seconds) takes it again on a
    new connection if its connection was lost (a database restart drops every lock)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: Conn | None = hold(database_url)

    def keep(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute(Q["health_ping"])
                return
            except Exception:
                self.conn.close()
        self.conn = None
        self.conn = hold(self.database_url)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def watching(conn: Conn) -> bool:
    """True while any monitor holds the lock."""
    row = conn.execute(Q["monitor_watching"], _KEY).fetchone()
    return bool(row and row["watching"])


def connect_for_checks(database_url: str) -> Conn:
    """A connection for `watching` checks (short connect timeout: a worker must not hang on it)."""
    return connect(database_url, connect_timeout=3)
