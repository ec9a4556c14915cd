"""Publishing: the broker is a doorbell. The task name, and the Celery settings that carry kodo's
crash semantics (shared by the producer in the API and the workers). Queue names: `kodo.queues`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

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
        # Ack after the task returns, so a worker killed mid-task leaves the message to redeliver.
        "task_acks_late": True,
        # A child killed by a signal (SIGKILL, OOM) would otherwise ack its message: requeue instead.
        # Requeues are capped in Postgres (recovery_attempts), not here.
        "task_reject_on_worker_lost": True,
        # One message per process at a time: nothing waits behind a long step in a prefetch buffer.
        "worker_prefetch_multiplier": 1,
        # Task events cost a broker publish each; Flower switches them on at runtime when it starts
        # (`enable_events`), so they are only paid while someone is watching.
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

    It satisfies the workflow layer's `Dispatcher` port structurally (no import of it here).
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, workflow_id: str, queue: str) -> None:
        self.app.send_task(RUN_WORKFLOW_TASK, args=[workflow_id], queue=queue)


def producer_app(settings: Settings) -> Celery:
    """A Celery app that only publishes (used by the API and the ops CLI)."""
    app = Celery("kodo-producer")
    app.conf.update(celery_settings(settings))
    return app
