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
from kombu.transport.redis import QoS as RedisQoS

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


# ---- kombu's Redis transport after a lost connection ------------------------------------------------
#
# When the connection to Redis is lost, kombu detaches the old channel from its connection, but
# messages delivered on it may still be acknowledged later (a task that finishes after the
# reconnect), and closing it restores its unacknowledged messages. Both open a Redis client from
# the detached channel: `AttributeError: 'NoneType' object has no attribute 'hostname'`, which
# Celery treats as unrecoverable: the worker exits (seen in every Redis restart under load, and
# by operators: "Restoring 1 unacknowledged message(s)" then the crash). Such a message is gone
# with its connection anyway: its entry in Redis's unacked set is redelivered after the visibility
# timeout (a no-op then: the run's claim is fenced), and the reconciler republishes its run as soon
# as the broker is back (Postgres is the truth). So the ack, reject or restore of a detached
# channel is skipped with a warning instead of ending the worker.


def _tolerate_detached_channel(name: str) -> None:
    original = getattr(RedisQoS, name)

    @functools.wraps(original)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except AttributeError as exc:
            transport = getattr(self.channel, "connection", None)
            if getattr(transport, "client", None) is not None:
                raise  # not the detached-channel failure (its transport still has its connection)
            log.warning("%s on a channel of a lost broker connection skipped (%r)", name, exc)
            return None

    setattr(RedisQoS, name, guarded)


for _name in ("ack", "reject", "restore_unacked"):
    _tolerate_detached_channel(_name)
