"""Shared fixtures: a dedicated test database and Redis db, real worker subprocesses.

Each test gets its own application version (KODO_APP_VERSION), so workers started by one test never
run another test's leftovers: the version-parity rule isolates them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from kodo.config import Settings
from kodo.db import migrate, pool
from kodo.runtime import Runtime
from tests.support import procs
from tests.support.workflows import TEST_EFFECTS_DDL

TEST_DB = os.environ.get("KODO_TEST_DB", "kodo_test")
TEST_REDIS = os.environ.get("KODO_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")

BASE_ENV = {
    "APP_DB_NAME": TEST_DB,
    "KODO_BROKER_URL": TEST_REDIS,
    "KODO_WORKFLOW_MODULES": "tests.support.workflows",
    "KODO_LEASE_MS": "2000",
    "KODO_RECONCILE_MS": "200",
    "KODO_REPUBLISH_AFTER_MS": "1000",
    # The scheduled tick is off: its rows would land in every test's tables. The time tests turn it
    # on for their own workers (tests/integration/test_time_scheduler.py).
    "KODO_SCHEDULE_TICK_MS": "0",
    "PYTHONUNBUFFERED": "1",
    # The sbxQ rate window counts every task of a partition for 60 s, and the suite's tasks share a
    # few partitions within a minute: the original's own task runner set 10000 (HEAD) for the same
    # reason. The flow-control tests set the limits they prove (tests/integration/test_admission.py).
    "SBX_QUEUE_RATE_LIMIT_PER_PERIOD": "10000",
}


# Tracing, metrics and Flower settings of the shell (OTLP_REQUIRED=1, an OTLP endpoint, ...) would
# reach every process a test starts: the tests that need them set their own.
OBSERVABILITY_VARS = ("OTLP_REQUIRED", "DBOS_ENABLE_OTLP", "PROMETHEUS_MULTIPROC_DIR", "FLOWER_BASIC_AUTH")


def pytest_configure(config: pytest.Config) -> None:
    for key in [
        k
        for k in os.environ
        if k.startswith(("KODO_", "OTEL_")) or k == "DBOS__APPVERSION" or k in OBSERVABILITY_VARS
    ]:
        os.environ.pop(key)
    os.environ.update(BASE_ENV)


@pytest.fixture(scope="session", autouse=True)
def _fresh_database() -> Iterator[None]:
    settings = Settings.from_env()
    migrate.ensure_database(settings.database_url)
    for schema in ("app", "dbos"):
        migrate.reset_schema(settings.database_url, schema)
    with psycopg.connect(settings.database_url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.test_effects")
        c.execute(TEST_EFFECTS_DDL)
    redis.Redis.from_url(TEST_REDIS).flushdb()
    yield
    pool.close_all()


@pytest.fixture
def version(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    v = "t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40] + "-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("KODO_APP_VERSION", v)
    yield v
    # A test's version is served by no worker once it ends: its unfinished rows must not keep
    # holding queue slots from the tests after it (in production, an operator cancels such work).
    with psycopg.connect(Settings.from_env().database_url, autocommit=True) as c:
        c.execute(
            "UPDATE dbos.workflow_status SET admitted_at_epoch_ms = NULL "
            "WHERE application_version = %s AND admitted_at_epoch_ms IS NOT NULL",
            (v,),
        )


@pytest.fixture
def settings(version: str) -> Settings:
    return Settings.from_env()


@pytest.fixture
def rt(settings: Settings) -> Runtime:
    return Runtime.build(settings)


@pytest.fixture
def worker_env(version: str) -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def start_worker(tmp_path: Path, worker_env: dict[str, str]) -> Iterator[Callable[..., procs.WorkerProc]]:
    started: list[procs.WorkerProc] = []
    count = 0

    def factory(**kwargs: Any) -> procs.WorkerProc:
        nonlocal count
        count += 1
        env = dict(worker_env)
        env.update(kwargs.pop("env", {}))
        w = procs.start_worker(tmp_path, kwargs.pop("name", f"w{count}"), env, **kwargs)
        started.append(w)
        return w

    yield factory
    for w in started:
        w.kill9()


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """A database of its own (created by the test through kodo.db.migrate), dropped afterwards."""
    name = f"kodo_mig_{uuid.uuid4().hex[:8]}"
    url = Settings.from_env({"APP_DB_NAME": name}).database_url
    yield url
    with psycopg.connect(Settings.from_env({"APP_DB_NAME": "postgres"}).database_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sql(settings: Settings) -> Callable[..., list[dict[str, Any]]]:
    """Run one SQL statement against the test database; returns rows as dicts."""

    def run(query: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        with pool.connect(settings.database_url) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run


def effects_of(sql: Callable[..., list[dict[str, Any]]], workflow_id: str) -> dict[str, int]:
    rows = sql("SELECT effect, n FROM public.test_effects WHERE workflow_id = %s", (workflow_id,))
    return {r["effect"]: r["n"] for r in rows}
