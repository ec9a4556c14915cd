"""Publishing: the broker is a doorbell. The task name, and the Celery settings that carry kodo's
crash semantics (shared by the producer in the API and the workers). Queue names: `kodo.queues`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from kodo.config import Settings
from kodo.queues import INTENT_QUEUE
from kodo.queues import WORKER_QUEUES as QUEUES

__all__ = ["QUEUES", "RUN_WORKFLOW_TASK", "CeleryDispatcher", "celery_settings", "producer_app"]

RUN_WORKFLOW_TASK = "kodo.run_workflow"


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration. Each crash-related option is set on purpose; see the comments."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": None,  # never read state from Celery: dbos.workflow_status is the truth
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": INTENT_QUEUE,
        # Every queue kodo's workers consume, declared (as Celery would create each on first use), so
        # monitors list them all (Flower's Broker page counts each, idle or not). Others still work.
        "task_queues": tuple(Queue(q, Exchange(q), routing_key=q) for q in QUEUES),  # type: ignore[no-untyped-call]
        "task_create_missing_queues": True,
        # Ack after the task returns, so a worker killed mid-task leaves the message to redeliver.
        "task_acks_late": True,
        # A child killed by a signal (SIGKILL, OOM) would otherwise ack its message: requeue instead.
        # Requeues are capped in Postgres (recovery_attempts), not here.
        "task_reject_on_worker_lost": True,
        # One message per process at a time: nothing waits behind a long step in a prefetch buffer.
        "worker_prefetch_multiplier": 1,
        # Task events cost a broker publish each, so they are off unless Flower watches: `workers.flower`
        # switches them on when it starts (and off when it stops), and a worker that comes up while it
        # runs switches them on itself before its first task (`workers.events`, `kodo.db.monitor`).
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Redis restores unacked messages after this; a duplicate is a no-op thanks to the lease,
            # and recovery never waits for it (the reconciler republishes from Postgres).
            "visibility_timeout": 3600,
        },
        "worker_hijack_root_logger": False,
    }


class CeleryDispatcher:
    """Publishes `kodo.run_workflow(workflow_id)` on the workflow's queue.

    The message carries the id alone (any worker, older or newer, runs it), and names what it runs
    for the monitors only: Celery's `shadow` name is the workflow's (Flower lists the delivery as
    `IntentWorkflow.run`, not `kodo.run_workflow`) and its `kwargsrepr`, what Flower shows as its
    kwargs, holds the workflow name and partition key. It satisfies the workflow layer's
    `Dispatcher` port structurally (no import of it here).
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(
        self, workflow_id: str, queue: str, *, name: str | None = None, partition_key: str | None = None
    ) -> None:
        labels: dict[str, Any] = {}
        if name is not None:
            shown = {"workflow_name": name, "partition_key": partition_key}
            labels = {"shadow": name, "kwargsrepr": repr(shown)}
        self.app.send_task(RUN_WORKFLOW_TASK, args=[workflow_id], queue=queue, **labels)


def producer_app(settings: Settings) -> Celery:
    """A Celery app that only publishes (used by the API and the ops CLI)."""
    app = Celery("kodo-producer")
    app.conf.update(celery_settings(settings))
    return app
