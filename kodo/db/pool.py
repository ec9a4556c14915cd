"""One connection pool per process. The only module that opens Postgres connections.

Celery's prefork pool forks children after the parent may have touched the database, so the pool is
keyed by pid: a forked child never reuses its parent's sockets.
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


def get_pool(database_url: str, max_size: int = 10) -> ConnectionPool[Conn]:
    """Return this process's pool for `database_url`, creating it on first use."""
    key = (os.getpid(), database_url)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                database_url,
                min_size=1,
                max_size=max_size,
                kwargs={"autocommit": True, "row_factory": dict_row},
                connection_class=psycopg.Connection[DictRow],
                open=True,
                name=f"kodo-{os.getpid()}",
            )
            _pools[key] = pool
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

    def __init__(self, database_url: str, max_size: int = 10) -> None:
        self.url = database_url
        self.max_size = max_size

    @property
    def pool(self) -> ConnectionPool[Conn]:
        return get_pool(self.url, self.max_size)

    @contextmanager
    def conn(self) -> Iterator[Conn]:
        with self.pool.connection() as c:
            yield c

    @contextmanager
    def tx(self) -> Iterator[Conn]:
        with self.pool.connection() as c, c.transaction():
            yield c
