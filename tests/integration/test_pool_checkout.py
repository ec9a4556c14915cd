"""The pool's checkout check (kodo/db/pool.py) on a real Postgres: a connection handed out again
within CHECK_IDLE_S, with nothing on its socket, costs no round trip; one that may be stale (idle
longer, or the server closed it) is checked, and a dead one is never handed out; a query that fails on
a connection broken while it was out is an OperationalError (the API's 503 `db_unavailable`, a
delivery's retry), and the pool replaces it and every idle one.

Each test has a pool of its own (an application_name of its own), so the backends it terminates are
its own. The round trips are counted from libpq's trace of the connection (every message it sends).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import psycopg
import pytest
from psycopg import pq
from psycopg.conninfo import make_conninfo

from kodo.config import Settings
from kodo.db import pool as dbpool
from kodo.db.pool import Conn, Database
from kodo.db.store import store_unavailable


class Trace:
    """libpq's trace of one connection, into `file`: the messages it sent (F) and received (B)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def sent(self) -> list[str]:
        """Each message sent, as `Type payload` (`Query ""` is the check's empty query)."""
        self.file.seek(0)
        fields = [line.split("\t") for line in self.file.read().decode(errors="replace").splitlines()]
        return [" ".join(x.strip() for x in f[2:]) for f in fields if f[0] == "F"]


@contextmanager
def traced(conn: Conn) -> Iterator[Trace]:
    with tempfile.TemporaryFile() as file:
        conn.pgconn.trace(file.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield Trace(file)
        finally:
            conn.pgconn.untrace()


@pytest.fixture
def app_name() -> str:
    return f"kodo-pooltest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def url(settings: Settings, app_name: str) -> str:
    return make_conninfo(settings.database_url, application_name=app_name)


MakeDb = Callable[..., Database]


@pytest.fixture
def make_db(url: str) -> Iterator[MakeDb]:
    """`make_db(max_size=1)`: a Database over a pool of its own (with one connection, every checkout
    gets the same one)."""
    made: list[Database] = []

    def make(max_size: int = 1) -> Database:
        db = Database(url, max_size=max_size, timeout_s=5.0)
        made.append(db)
        return db

    yield make
    for db in made:
        db.pool.close()


def backends(settings: Settings, app_name: str) -> set[int]:
    with psycopg.connect(settings.database_url, autocommit=True) as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,))
        return {r[0] for r in rows.fetchall()}


def terminate(settings: Settings, pids: set[int]) -> None:
    """pg_terminate_backend each one, and wait until it is gone (its socket closed by the server)."""
    with psycopg.connect(settings.database_url, autocommit=True) as c:
        for pid in pids:
            c.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    deadline = time.monotonic() + 5
    while True:
        with psycopg.connect(settings.database_url, autocommit=True) as c:
            left = c.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)).fetchall()
        if not left:
            return
        assert time.monotonic() < deadline, left
        time.sleep(0.01)


def backend_pid(c: Conn) -> int:
    row = c.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def test_a_warm_connection_is_handed_out_again_with_no_round_trip(make_db: MakeDb) -> None:
    db = make_db()  # one connection: every checkout gets it
    with db.conn() as c:
        c.execute("SELECT 1")
        conn = c
    with traced(conn) as trace:
        for _ in range(20):
            with db.conn() as c:
                assert c is conn
                c.execute("SELECT 1", prepare=False)  # a simple query: one message, one round trip
        # Only the queries themselves: no check (an empty query, one round trip each) before them.
        assert trace.sent() == ['Query "SELECT 1"'] * 20


def test_a_connection_idle_longer_than_the_threshold_is_checked(
    make_db: MakeDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbpool, "CHECK_IDLE_S", 0.2)
    db = make_db()
    with db.conn() as c:
        conn = c
    with traced(conn) as trace:
        time.sleep(0.3)
        with db.conn() as c:
            c.execute("SELECT 1")
        with db.conn() as c:  # again at once: not checked
            c.execute("SELECT 2")
        assert trace.sent() == ['Query ""', 'Query "SELECT 1"', 'Query "SELECT 2"']


def test_connections_the_server_closed_are_never_handed_out(
    make_db: MakeDb, settings: Settings, app_name: str
) -> None:
    """Terminated (as a Postgres restart terminates them) a moment after their last use, well within
    CHECK_IDLE_S: the socket says so, the checkout checks, and the pool reconnects; no caller sees
    an error."""
    db = make_db(max_size=3)
    held = threading.Barrier(3)

    def use() -> None:
        with db.conn() as c:
            c.execute("SELECT 1")
            held.wait(5)  # three connections out at once: the pool has three

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    old = backends(settings, app_name)
    assert len(old) == 3
    terminate(settings, old)
    t0 = time.monotonic()
    seen = set()
    for _ in range(6):
        with db.conn() as c:
            seen.add(backend_pid(c))
    assert time.monotonic() - t0 < dbpool.CHECK_IDLE_S + 2
    assert seen.isdisjoint(old), (seen, old)


@pytest.mark.parametrize("how", ["conn", "tx"])
def test_a_query_on_a_connection_broken_while_out_is_unavailable_and_the_pool_reconnects(
    make_db: MakeDb, settings: Settings, app_name: str, how: str
) -> None:
    db = make_db(max_size=2)
    with db.conn() as a, db.conn() as b:  # two connections: one to break, one idle
        a.execute("SELECT 1")
        b.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError) as failed, db.conn() if how == "conn" else db.tx() as c:
        old = backend_pid(c)
        others = backends(settings, app_name) - {old}
        terminate(settings, {old})
        c.execute("SELECT 1")
    assert store_unavailable(failed.value)  # the API's 503 db_unavailable, a delivery's retry
    # The broken connection is replaced, and the idle one (as stale as it, after a restart) too.
    with db.conn() as c:
        new = backend_pid(c)
    assert new != old
    deadline = time.monotonic() + 5
    while backends(settings, app_name) & others:
        assert time.monotonic() < deadline, "the idle connection was not replaced"
        time.sleep(0.02)
