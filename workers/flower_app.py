"""The Celery app Flower runs with (`python -m workers.flower`, `celery -A workers.flower_app flower`).

It has kodo's Celery settings (the broker, the declared queues, the event settings) and none of the
workers' modules: Flower reads task events and asks the workers, it runs no task, so it loads no
workflow, engine or tracing (about 19 MiB less than `workers.celery_app`).
"""

from __future__ import annotations

from kodo.config import Settings
from kodo.dispatch import producer_app

app = producer_app(Settings.from_env())
