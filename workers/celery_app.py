"""The Celery app of kodo workers: `celery -A kodo worker -Q intentQ` (or sbxQ, controlQ).

The task is thin: decode the workflow id, hand it to the engine, return what happened. Crash
semantics (acks_late, reject_on_worker_lost, prefetch 1) are set in `kodo.dispatch.celery_settings`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import Any

from celery import Celery, signals

from kodo import telemetry
from kodo.config import Settings
from kodo.db import pool
from kodo.dispatch import QUEUES, RUN_WORKFLOW_TASK, celery_settings
from kodo.runtime import Runtime, import_workflow_modules
from kodo.workflow import executor
from kodo.workflow.reconciler import Reconciler
from workers.events import EventsFollowMonitor

log = logging.getLogger("kodo.worker")
task_log = logging.getLogger("kodo.worker.task")  # a line per delivery: KODO_TASK_LOG (workers.tasklog)

_settings = Settings.from_env()
# Tracing (when configured) before any task; with OTLP required, an endpoint that does not answer
# stops the worker here, at start-up. Forked pool children inherit it.
telemetry.setup(_settings)
# The workflow modules are imported here, before the pool forks its children: each child starts
# with them loaded instead of importing them on its first delivery (which, on a busy machine, made
# the first runs after a worker restart wait seconds).
import_workflow_modules(_settings.workflow_modules)
app = Celery("kodo")
app.conf.update(celery_settings(_settings))
app.conf.worker_enable_remote_control = True
# Reconnects to the broker within a second of it being back (`workers.consumer`).
app.conf.worker_consumer = "workers.consumer:FastReconnectConsumer"
# ... and keeps trying while the broker is away (Celery's default gives up after 100 attempts, which
# the faster attempts would reach in under two minutes).
app.conf.broker_connection_max_retries = None

_runtime: Runtime | None = None
_reconciler: Reconciler | None = None
_events: EventsFollowMonitor | None = None


_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime (built after fork, so each child has its own pool; built once for the
    threads of a `--pool threads` worker)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime.build(_settings, celery_app=app)
    return _runtime


# A delivery that failed on infrastructure (the database away) is delivered again after this backoff:
# 0.2 s, doubling, at most 1 s, for about two minutes; then the reconciler's republish takes over.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 1.0
RETRY_LIMIT = 120


def retry_delay(retries: int) -> float:
    return float(min(RETRY_FIRST_S * 2**retries, RETRY_MAX_S))


@app.task(name=RUN_WORKFLOW_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_workflow(self: Any, workflow_id: str, **_: Any) -> str:
    """Run `workflow_id`: Postgres says what runs. The message's shadow name (`kodo.dispatch`) only
    labels it for Flower and the task span; any keyword a newer producer may add is ignored.

    If the database is unreachable (`store_unavailable`: a psycopg OperationalError, a pool timeout)
    the delivery is retried shortly (`retry_delay`) instead of failing and waiting for the
    reconciler's republish window. The retry is only a doorbell: it claims like any delivery, so a
    run another delivery took over meanwhile makes it a counted no-op, and recorded steps are replayed,
    never run again. Its countdown is short (well under the broker's visibility timeout), and the
    durable state stays in Postgres."""
    telemetry.label_task_span(workflow_id, getattr(self.request, "shadow", None))
    rt = runtime()
    try:
        outcome = rt.engine.execute(workflow_id)
    except Exception as exc:
        if not rt.engine.store_unavailable(exc) or self.request.retries >= RETRY_LIMIT:
            raise
        delay = retry_delay(self.request.retries)
        log.warning(
            "%s %s: database unavailable (%s: %s); retrying in %.1fs",
            RUN_WORKFLOW_TASK,
            workflow_id,
            type(exc).__name__,
            str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            delay,
        )
        raise self.retry(countdown=delay, max_retries=RETRY_LIMIT) from None
    task_log.info("%s %s -> %s", RUN_WORKFLOW_TASK, workflow_id, outcome)
    return str(outcome)


@signals.worker_init.connect
def _freeze_heap(**_: Any) -> None:
    """In the worker's main process, before the prefork pool forks its children: what is allocated
    so far (modules, the app, the workflow registry) moves to the collector's permanent generation,
    so a child's collections never write to (and so copy) the pages it shares with this process.
    An idle intent worker with 4 children: 209 MiB of PSS before, 123 MiB after."""
    gc.collect()
    gc.freeze()


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    global _runtime
    _runtime = None  # never share the parent's connections across fork
    # The per-worker caps count the leases of the whole worker (this pool's main process).
    executor.set_node(f"{executor.HOST}:{os.getppid()}")


@signals.worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    telemetry.flush()  # a pool child exits without atexit: export its last spans now
    pool.close_all()


@signals.worker_ready.connect
def _follow_monitor(sender: Any = None, **_: Any) -> None:
    """Task events on while Flower watches, from the first task (`workers.events`)."""
    global _events
    dispatcher = getattr(sender, "event_dispatcher", None)
    if dispatcher is None or _events is not None:
        return
    _events = EventsFollowMonitor(dispatcher, _settings.database_url)
    _events.start()


@signals.worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    """Embedded reconciler in the worker's main process (KODO_EMBEDDED_RECONCILER, default on)."""
    global _reconciler
    if not _settings.embedded_reconciler or _reconciler is not None:
        return
    # Migrations are a deploy step (ops/start.sh, the compose `migrate` service), not a worker's:
    # running them here would delay "ready" and so every recovery. The reconciler retries until
    # the schema exists.
    _reconciler = runtime().reconciler()
    _reconciler.start()
    log.info("embedded reconciler started (version %s, queues %s)", _settings.app_version, ",".join(QUEUES))


@signals.worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stop()
    if _events is not None:
        _events.stop()
