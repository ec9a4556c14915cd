"""The system of the fault tests: a private PostgreSQL and Redis (`ops.servers`), the real API,
intent worker and reconciler processes (`tests.e2e.live.LiveSystem`) against them, and an in-process
runtime of the same version to start workflows and read rows.

Only these private servers are ever stopped or restarted: the machine's shared Postgres (5432) and
Redis (6379) are never touched. Recovery runs with kodo's production timings (lease 5 s, republish
window 10 s, reconciler pass 500 ms), not the shortened ones of the other tests, so a recovery that
waits for a lease or a republish window shows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from kodo.config import Settings
from kodo.db import migrate
from kodo.runtime import Runtime
from ops.servers import PostgresServer, RedisServer
from tests.e2e.live import LiveSystem
from tests.support.workflows import TEST_EFFECTS_DDL

DB = "kodo"
PRODUCTION_TIMINGS = {
    "KODO_LEASE_MS": "5000",
    "KODO_REPUBLISH_AFTER_MS": "10000",
    "KODO_RECONCILE_MS": "500",
}


@dataclass
class FaultSystem:
    pg: PostgresServer
    redis: RedisServer
    live: LiveSystem
    rt: Runtime

    def sql(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.pg.dsn(DB), autocommit=True, row_factory=dict_row, connect_timeout=2) as c:
            cur = c.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def statuses(self, ids: list[str]) -> dict[str, str]:
        rows = self.sql(
            "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,)
        )
        return {r["workflow_uuid"]: r["status"] for r in rows}

    def effects(self, ids: list[str]) -> dict[str, dict[str, int]]:
        rows = self.sql(
            "SELECT workflow_id, effect, n FROM public.test_effects WHERE workflow_id = ANY(%s)", (ids,)
        )
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["workflow_id"], {})[r["effect"]] = r["n"]
        return out

    def worker_log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.live.log_dir.glob("*intent*.log"))
        )

    def logs(self) -> str:
        return self.live.logs(40)


@contextlib.contextmanager
def fault_system(tmp: Path, tag: str, env: dict[str, str] | None = None) -> Iterator[FaultSystem]:
    with PostgresServer(base_dir=tmp) as pg, RedisServer(base_dir=tmp) as rd:
        url = pg.create_database(DB)
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(TEST_EFFECTS_DDL)
        live = LiveSystem(
            tmp / "logs",
            tag,
            {
                "KODO_DATABASE_URL": url,
                "KODO_BROKER_URL": rd.url(0),
                "KODO_WORKFLOW_MODULES": "tests.support.workflows,tests.support.fault_workflows",
                "KODO_INTENT_CONCURRENCY": "4",
                **PRODUCTION_TIMINGS,
                **(env or {}),
            },
        )
        try:
            live.start("reconciler", "api", "intent")
            rt = Runtime.build(Settings.from_env(live.env))
            yield FaultSystem(pg, rd, live, rt)
        finally:
            live.close()


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ([A-Z]+)/[^\]]*\] (.*)$")


def log_lines_after(text: str, since_epoch: float) -> list[str]:
    """Celery log lines (`[YYYY-mm-dd HH:MM:SS,mmm: LEVEL/process] message`) at or after `since_epoch`."""
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        at = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= since_epoch:
            out.append(line)
    return out


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll `check()` until true; returns the time it took (s); AssertionError after `timeout`."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
