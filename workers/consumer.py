"""The worker's consumer, reconnecting to the broker within a second of it being back.

Celery's consumer reconnects with kombu's defaults: 2 s after the first failure, then 4 s, 6 s ...
up to 30 s, so a worker could stay deaf for seconds after a Redis or RabbitMQ outage ended (a 4 s
outage: next attempt 6 s after it began). Here the attempts come `INTERVAL_START_S` after the
failure, then every `INTERVAL_STEP_S` more, at most every `INTERVAL_MAX_S`. Everything else is
Celery's own `ensure_connected` (its retry limits, messages and shutdown checks). Selected with the
documented `worker_consumer` setting (`workers.celery_app`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger("kodo.worker")

INTERVAL_START_S = 0.2
INTERVAL_STEP_S = 0.2
INTERVAL_MAX_S = 1.0


class FastReconnectConsumer(Consumer):  # type: ignore[misc]  # Celery is untyped
    def ensure_connected(self, conn: Any) -> Any:
        original = conn.ensure_connection
        conn.ensure_connection = functools.partial(
            original,
            interval_start=INTERVAL_START_S,
            interval_step=INTERVAL_STEP_S,
            interval_max=INTERVAL_MAX_S,
        )
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection  # the instance attribute: the class's method is back

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Celery's cleanup after a lost connection, surviving kombu's Redis-transport failure in it.

        Closing the lost connection restores its unacknowledged messages, which opens a new Redis
        client from a connection kombu has already detached: `AttributeError: 'NoneType' object has no
        attribute 'hostname'`, which Celery treats as unrecoverable and exits the worker on (seen
        under load in a Redis restart). The connection is already dropped by then, so the reconnect
        cycle can go on; the messages stay in Redis's unacked set, redelivered after the visibility
        timeout, and the reconciler republishes their runs at once anyway (Postgres is the truth).
        """
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as err:
            log.warning("broker connection cleanup failed (%r); reconnecting anyway", err)
