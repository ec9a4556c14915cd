"""Wiring: one place that builds the engine, client and reconciler from Settings.

Each entrypoint (API, Celery worker, ops CLI) builds its own Runtime; nothing is global except the
Celery app object that Celery requires.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from celery import Celery

from kodo import telemetry
from kodo.config import Settings
from kodo.db.pool import Database
from kodo.db.store import PgStore, store_unavailable
from kodo.dispatch import BrokerProbe, CeleryDispatcher, producer_app
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
