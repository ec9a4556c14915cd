"""One connection pool per process. The only module that opens Postgres connections.

Celery's prefork pool forks children after the parent may have touched the database, so the pool is
keyed by pid: a forked child never reuses its parent's sockets.

Recovering from a database restart (or failover) in well under a second:

* **No stale connection is handed out.** Every checkout is checked (`check=`, an empty query: one
  round trip). The first failed check means the server dropped its connections, so the whole idle
  pool is drained at once, not discovered one broken connection (and one failed delivery) at a time.
* **Reconnection is retried every `RECONNECT_S`.** psycopg_pool backs off from 1 s, doubling (1, 2,
  4, 8 s...), so after a 3 s outage its next attempt could come 4 s after the server is back. Here a
  reconnection attempt gives up after `RECONNECT_S` (`reconnect_timeout`) and `reconnect_failed`
  starts the next one at once: one attempt per `RECONNECT_S` while the database is away.
* **A checkout waits at most `timeout_s`** (KODO_DB_POOL_TIMEOUT_MS) and then raises `PoolTimeout`,
  a `psycopg.OperationalError`: the API answers 503 `db_unavailable` instead of hanging, a delivery
  is retried (`kodo.db.store.store_unavailable` tells it from a failing step).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

Conn = psycopg.Connection[DictRow]

_lock = threading.Lock()
_pools: dict[tuple[int, str], ConnectionPool[Conn]] = {}

RECONNECT_S = 0.25  # one reconnection attempt per this many seconds while the database is away
DEFAULT_TIMEOUT_S = 2.0  # the longest a checkout waits for a connection (then PoolTimeout)
CONNECT_TIMEOUT_S = 2  # libpq connect_timeout (whole seconds): a silent host is given up on


def _reconnect_failed(pool: ConnectionPool[Conn]) -> None:
    """A reconnection attempt gave up (after RECONNECT_S): start the next one now. `check()` grows
    the pool back by one connection (and checks the idle ones: there are none while it is down)."""
    if not pool.closed:
        pool.check()


def get_pool(
    database_url: str, max_size: int = 10, timeout_s: float = DEFAULT_TIMEOUT_S
) -> ConnectionPool[Conn]:
    """Return this process's pool for `database_url`, creating it on first use."""
    key = (os.getpid(), database_url)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _lock:
        pool = _pools.get(key)
        if pool is None:

            def check(conn: Conn) -> None:
                """The checkout check: an empty query. A failure means the server dropped its
                connections: every idle one predates it, so all are replaced at once (`drain`)."""
                try:
                    ConnectionPool.check_connection(conn)
                except Exception:
                    new.drain()
                    raise

            new: ConnectionPool[Conn] = ConnectionPool(
                database_url,
                min_size=1,
                max_size=max_size,
                kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_S},
                connection_class=psycopg.Connection[DictRow],
                check=check,
                timeout=timeout_s,
                reconnect_timeout=RECONNECT_S,
                reconnect_failed=_reconnect_failed,
                open=False,
                name=f"kodo-{os.getpid()}",
            )
            # Not waiting for the first connection: with the database down, a process still starts
            # (and its API answers 503) instead of failing here.
            new.open(wait=False)
            _pools[key] = pool = new
        return pool


def close_all() -> None:
    """Close this process's pools (worker shutdown, test teardown)."""
    with _lock:
        for key in [k for k in _pools if k[0] == os.getpid()]:
            _pools.pop(key).close()


def connect(database_url: str, **kwargs: Any) -> Conn:
    """A dedicated connection outside the pool (LISTEN loops, admin tasks)."""
    return psycopg.connect(database_url, autocommit=True, row_factory=dict_row, **kwargs)


class Database:
    """Thin handle over the pool: `with db.conn() as c` or `with db.tx() as c` for a transaction."""

    def __init__(self, database_url: str, max_size: int = 10, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = database_url
        self.max_size = max_size
        self.timeout_s = timeout_s

    @property
    def pool(self) -> ConnectionPool[Conn]:
        return get_pool(self.url, self.max_size, self.timeout_s)

    @contextmanager
    def conn(self, timeout_s: float | None = None) -> Iterator[Conn]:
        """A pooled connection; waiting longer than `timeout_s` (default: the pool's) for one
        raises `psycopg_pool.PoolTimeout` (a `psycopg.OperationalError`)."""
        with self.pool.connection(timeout=timeout_s) as c:
            yield c

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        with self.pool.connection() as c, c.transaction():
            yield c
