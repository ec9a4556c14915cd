"""The Postgres and Redis the benchmark runs on: connections, its databases, the broker db, the env.

Databases are named `kodo_bench*` (refused otherwise); the broker db is flushed and must have no other
client (its workers would take our messages).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import kombu.pools
import psycopg
import redis
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from ops import processes
from ops.bench import BenchError

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

Conn = psycopg.Connection[DictRow]


def db_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def connect(url: str) -> Conn:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def recreate_database(name: str) -> None:
    """DROP (terminating leftover sessions) and CREATE a benchmark database."""
    if not name.startswith("kodo_bench"):
        raise BenchError(f"refusing to recreate {name!r}: benchmark databases are named kodo_bench*")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def broker_url(redis_db: int) -> str:
    return f"redis://127.0.0.1:6379/{redis_db}"


def prepare_broker(redis_db: int, allow_shared: bool) -> None:
    """Refuse a broker db that other clients use (their workers would consume our messages); flush it."""
    kombu.pools.reset()  # type: ignore[no-untyped-call]  # close this process's idle broker connections from earlier phases
    admin = redis.Redis(host="127.0.0.1", port=6379, db=0)
    clients = [c for c in admin.client_list() if str(c.get("db")) == str(redis_db)]
    admin.close()
    mine = processes.own_tcp_ports()
    others = [c for c in clients if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) not in mine]
    if others and not allow_shared:
        raise BenchError(
            f"{len(others)} other client(s) are connected to redis db {redis_db} (e.g. "
            f"{others[0].get('addr')} running {others[0].get('cmd')}): pick a free db with --redis-db, "
            "or pass --allow-shared-broker"
        )
    redis.Redis.from_url(broker_url(redis_db)).flushdb()


def broker_backlog(r: redis.Redis[bytes], queue: str) -> int:
    """Messages of `queue` still in a Celery Redis broker: queued (every priority list) or unacked."""
    lists = [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))]  # kombu's priority-list key names
    return sum(int(r.llen(key)) for key in lists) + int(r.hlen("unacked"))


def broker_drain(url: str, queue: str, timeout_s: float = 180.0) -> Callable[[], float]:
    """A `drain` for `measure_all`: block until the broker holds no message of `queue`."""
    r = redis.Redis.from_url(url)

    def drain() -> float:
        began = time.monotonic()
        while (left := broker_backlog(r, queue)) > 0:
            if time.monotonic() - began > timeout_s:
                raise BenchError(f"broker still holds {left} messages of {queue} after {timeout_s:.0f}s")
            time.sleep(0.05)
        return time.monotonic() - began

    return drain


def base_env() -> dict[str, str]:
    """The environment of the benchmark's processes: ours without any kodo/DBOS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODO_", "DBOS__", "APP_DB_NAME"))}
    return processes.child_env(env, {"PYTHONUNBUFFERED": "1"})
