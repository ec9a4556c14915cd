"""Raw Celery baseline: one task per "workflow", doing four plain autocommit INSERTs.

Workers: `celery -A ops.bench.raw_celery worker -Q rawQ -c N`. Environment:
- BENCH_BROKER_URL  the broker (the same Redis as kodo's run);
- BENCH_RAW_DB_URL  the database holding `public.bench_raw`;
- BENCH_RAW_CONFIG  `defaults` (Celery's defaults: early ack, prefetch 4, no task events) or `kodo`
  (kodo's own Celery settings: acks_late, reject_on_worker_lost, prefetch 1, task events);
- BENCH_RAW_OVERRIDES  optional JSON object of Celery settings applied last (for experiments, e.g.
  '{"worker_send_task_events": false, "task_send_sent_event": false}').
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import psycopg
from celery import Celery

from kodo.config import Settings
from kodo.dispatch import celery_settings

TASK = "bench.raw_four_inserts"
QUEUE = "rawQ"
DDL = """
CREATE TABLE IF NOT EXISTS public.bench_raw (
    task_key text NOT NULL, step integer NOT NULL, ts_ms double precision NOT NULL,
    PRIMARY KEY (task_key, step))
"""
_INSERT = "INSERT INTO public.bench_raw (task_key, step, ts_ms) VALUES (%s, %s, %s)"


def make_config(broker_url: str, mode: str) -> dict[str, Any]:
    if mode == "kodo":
        conf = celery_settings(Settings.from_env({"KODO_BROKER_URL": broker_url}))
    elif mode == "defaults":
        conf = {"broker_url": broker_url, "broker_connection_retry_on_startup": True}
    else:
        raise ValueError(f"unknown BENCH_RAW_CONFIG {mode!r}")
    conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    conf.update(json.loads(os.environ.get("BENCH_RAW_OVERRIDES", "{}")))
    return conf


app = Celery("kodo-bench-raw")
app.conf.update(
    make_config(
        os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"),
        os.environ.get("BENCH_RAW_CONFIG", "defaults"),
    )
)

_conn: tuple[int, psycopg.Connection[Any]] | None = None


def _connection() -> psycopg.Connection[Any]:
    """One autocommit connection per (forked) process."""
    global _conn
    if _conn is None or _conn[0] != os.getpid() or _conn[1].closed:
        _conn = (os.getpid(), psycopg.connect(os.environ["BENCH_RAW_DB_URL"], autocommit=True))
    return _conn[1]


def four_inserts(key: str) -> None:
    c = _connection()
    for step in range(1, 5):
        c.execute(_INSERT, (key, step, time.time() * 1000))


app.task(name=TASK, ignore_result=True)(four_inserts)
