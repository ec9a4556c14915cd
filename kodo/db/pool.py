"""One connection pool per process. The only module that opens Postgres connections.

Celery's prefork pool forks children after the parent may have touched the database, so the pool is
keyed by pid: a forked child never reuses its parent's sockets.

Recovering from a database restart (or failover) in well under a second:

* **No stale connection is handed out.** A checkout checks its connection (`check=`, an empty query:
  one round trip) when it may be stale: it was last handed out more than `CHECK_IDLE_S` ago, or its
  socket has something to read. An idle connection's socket has nothing to read unless the server
  spoke on its own: a restart's or `pg_terminate_backend`'s error, the end of the connection. One
  handed out again within `CHECK_IDLE_S` with a silent socket (every checkout under load) costs a
  `poll()`, not a round trip. The first failed check means the server dropped its connections, so
  the whole idle pool is drained at once, not discovered one broken connection (and one failed
  delivery) at a time.
* **A query that fails on a broken connection drains the pool too** (the server went away after an
  unchecked checkout, or while the connection was out): the caller gets the `OperationalError` (the
  API answers 503 `db_unavailable`, a delivery is retried), the broken connection is replaced and so
  is every idle one (`Database.conn`, `Database.tx`).
* **Reconnection is retried every `RECONNECT_S`.** psycopg_pool backs off from 1 s, doubling (1, 2,
  4, 8 s...), so after a 3 s outage its next attempt could come 4 s after the server is back. Here a
  reconnection attempt gives up after `RECONNECT_S` (`reconnect_timeout`) and `reconnect_failed`
  starts the next one at once: one attempt per `RECONNECT_S` while the database is away.
* **A checkout waits at most `timeout_s`** (KODO_DB_POOL_TIMEOUT_MS) and then raises `PoolTimeout`,
  a `psycopg.OperationalError`: the API answers 503 `db_unavailable` instead of hanging, a delivery
  is retried (`kodo.db.store.store_unavailable` tells it from a failing step).
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
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
CHECK_IDLE_S = 1.0  # a connection handed out longer ago than this is checked at its next checkout


class PooledConnection(psycopg.Connection[DictRow]):
    """A connection of a kodo pool: it remembers when the pool last handed it out."""

    handed_out_at: float = -math.inf  # monotonic; never yet: its first checkout is checked

    def needs_check(self) -> bool:
        """Whether this checkout must check the connection (and stamp it handed out now): it was
        handed out more than CHECK_IDLE_S ago, or its socket has something to read (or is gone)."""
        now = time.monotonic()
        last, self.handed_out_at = self.handed_out_at, now
        return now - last > CHECK_IDLE_S or _socket_has_input(self)


def _socket_has_input(conn: Conn) -> bool:
    """Something to read on an idle connection (a server's error or EOF), or no socket at all: no
    round trip, one poll() that returns at once."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:  # no socket: the connection is closed
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # POLLHUP and POLLERR are reported regardless
    return bool(poller.poll(0))


def _reconnect_failed(pool: ConnectionPool[Conn]) -> None:
    """A reconnection attempt gave up (after RECONNECT_S): start the next one now. `check()` grows
    the pool back by one connection (and checks the idle ones: there are none while it is down)."""
    if not pool.closed:
        pool.check()


def _drain_if_broken(pool: ConnectionPool[Conn], conn: Conn) -> None:
    """A query failed: if the connection broke (the server went away), its idle siblings are as
    stale as it was, so replace them all now rather than one failed checkout at a time."""
    if conn.broken and not pool.closed:
        pool.drain()


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
                """The checkout check, when the connection may be stale (`needs_check`): an empty
                query. A failure means the server dropped its connections: every idle one predates
                it, so all are replaced at once (`drain`)."""
                if isinstance(conn, PooledConnection) and not conn.needs_check():
                    return
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
                connection_class=PooledConnection,
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
        pool = self.pool
        with pool.connection(timeout=timeout_s) as c:
            try:
                yield c
            except Exception:
                _drain_if_broken(pool, c)
                raise

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        pool = self.pool
        with pool.connection() as c:
            try:
                with c.transaction():
                    yield c
            except Exception:
                _drain_if_broken(pool, c)
                raise
