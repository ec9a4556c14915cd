"""Wiring: one place that builds the engine, client and reconciler from Settings.

Each entrypoint (API, Celery worker, ops CLI) builds its own Runtime; nothing is global except the
Celery app object that Celery requires.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from kodo import clock, telemetry
from kodo.config import QueueLimits, Settings
from kodo.db import limits
from kodo.db.pool import Database
from kodo.db.store import PgStore, store_unavailable
from kodo.dispatch import BrokerProbe, CeleryDispatcher, producer_app
from kodo.errors import ValidationError
from kodo.workflow.client import Client
from kodo.workflow.engine import Engine
from kodo.workflow.reconciler import Reconciler
from kodo.workflow.scheduler import SCHEDULES

# Modules whose import registers workflows. Workers and the API import the same list, so both know
# every workflow name (the API needs the names and queues to start them).
DEFAULT_WORKFLOW_MODULES = (
    "kodo.demo.crashdemo",
    "kodo.demo.slowstep",
    "kodo.intent.workflow",
    "kodo.intent.timewf",
)


def import_workflow_modules(extra: tuple[str, ...]) -> None:
    """Import the default workflow modules and `extra` (Settings.workflow_modules)."""
    for name in (*DEFAULT_WORKFLOW_MODULES, *extra):
        importlib.import_module(name)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: PgStore
    engine: Engine
    client: Client
    celery_app: Celery | None = None  # what publishes (the worker's app, or a producer-only one)

    @classmethod
    def build(cls, settings: Settings | None = None, celery_app: Celery | None = None) -> Runtime:
        settings = settings or Settings.from_env()
        import_workflow_modules(settings.workflow_modules)
        db = Database(settings.database_url, settings.db_pool_max, settings.db_pool_timeout_ms / 1000)
        store = PgStore(db)
        app = celery_app or producer_app(settings)
        engine = Engine(settings, store, CeleryDispatcher(app), store_unavailable=store_unavailable)
        telemetry.install(engine, settings)  # step metrics; spans when tracing is configured
        return cls(
            settings=settings, db=db, store=store, engine=engine, client=Client(engine), celery_app=app
        )

    # ---- queue limits (kodo queue show|set|reset, the admin port) -----------------------------

    def show_limits(self) -> list[dict[str, Any]]:
        with self.db.conn() as c:
            return limits.show(c, clock.now_ms())

    def set_limits(self, queue: str, partition: str | None, raw: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Validate and apply an operator's change, then admit what it allows at once (every other
        process applies it within a second: the limited queues are read again that often, and each
        reconciler's sweep admits)."""
        limits.check_queue(queue)
        if partition is not None and not partition.strip():
            raise ValidationError("partition must be non-blank")
        change = limits.parse_change(raw, partition=partition is not None)
        default = self.settings.queue_limits.get(queue, QueueLimits())
        with self.db.tx() as c:
            if partition is None:
                limits.set_queue(c, queue, change, default, clock.now_ms())
            else:
                limits.set_partition(c, queue, partition, change, default, clock.now_ms())
        self.client.admit(queue)
        return self.show_limits()

    def reset_limits(self, queue: str, partition: str | None) -> list[dict[str, Any]]:
        """Back to the environment's defaults (a queue), or the queue's own (a partition)."""
        default = self.settings.queue_limits.get(queue, QueueLimits())
        with self.db.tx() as c:
            limits.reset(c, queue, partition, default, clock.now_ms())
        self.client.admit(queue)
        return self.show_limits()

    def reconciler(self) -> Reconciler:
        return Reconciler.standard(
            self.settings,
            self.store,
            self.engine.publisher,
            cancel=self.client.cancel,
            start=self.client.start_txn,
            schedules=SCHEDULES.all(),
            broker=BrokerProbe(self.celery_app or producer_app(self.settings), self.settings),
        )
