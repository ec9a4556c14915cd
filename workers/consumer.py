"""The worker's consumer: reconnecting to the broker within a second of it being back, and sending
its task events in batches.

Celery's consumer reconnects with kombu's defaults: 2 s after the first failure, then 4 s, 6 s ...
up to 30 s, so a worker could stay deaf for seconds after a Redis or RabbitMQ outage ended (a 4 s
outage: next attempt 6 s after it began). Here the attempts come `INTERVAL_START_S` after the
failure, then every `INTERVAL_STEP_S` more, at most every `INTERVAL_MAX_S`. Everything else is
Celery's own `ensure_connected` (its retry limits, messages and shutdown checks). Selected with the
documented `worker_consumer` setting (`workers.celery_app`).

Task events (sent while a monitor watches: `workers.events`) are buffered by Celery's worker (its event
dispatcher's `task` buffer group), but flushed at the loop's next tick: about one broker publish per
event, each costing about as much as a task's own doorbell. Here the buffer is flushed at the next tick
too while flushes stay under `EVENTS_FLUSHES_PER_S` a second (a burst of `EVENTS_FLUSH_BURST` allowed),
and beyond that as soon as the rate allows (or at once when it holds Celery's `buffer_limit`, 24
events): a worker with little to do sends each event as Celery does, a busy one sends up to 24 events
in one publish, each at most 1/`EVENTS_FLUSHES_PER_S` s later. Every event is still sent, in order.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from celery.worker.consumer import Consumer
from kombu.transport.redis import QoS as RedisQoS

log = logging.getLogger("kodo.worker")

INTERVAL_START_S = 0.2
INTERVAL_STEP_S = 0.2
INTERVAL_MAX_S = 1.0

# The task events' flushes: at the loop's next tick while fewer than EVENTS_FLUSHES_PER_S a second
# (and a burst of EVENTS_FLUSH_BURST) go out, later beyond that (a token bucket).
EVENTS_FLUSHES_PER_S = 10.0
EVENTS_FLUSH_BURST = 5.0
# A flush scheduled this long ago and not run (its timer lost with a reset loop) is scheduled again.
EVENTS_FLUSH_STALE_S = 1.0


class FastReconnectConsumer(Consumer):  # type: ignore[misc]  # Celery is untyped
    _events_flush_due: float | None = None
    _events_tokens = EVENTS_FLUSH_BURST
    _events_tokens_at = 0.0

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

    def on_send_event_buffered(self) -> None:
        """Called by the event dispatcher for each buffered event. Celery's flushes the buffer at the
        loop's next tick; this one too while the flushes stay under their rate, else as soon as the
        rate allows one more (meanwhile the events gather in the buffer)."""
        hub = self.hub
        if hub is None:
            return
        now = time.monotonic()
        due = self._events_flush_due
        if due is not None and now < due + EVENTS_FLUSH_STALE_S:
            return  # a flush is scheduled already: this event goes with it
        delay = self._take_flush_token(now)
        self._events_flush_due = now + delay
        # The event may come from another thread: hop to the loop's thread (call_soon is thread-safe,
        # the loop's timer is not).
        if delay <= 0:
            hub.call_soon(self._flush_buffered_events)
        else:
            hub.call_soon(self._schedule_events_flush, delay)

    def _take_flush_token(self, now: float) -> float:
        """Seconds until the next flush may go (0: now), its token taken (borrowed if in the future)."""
        elapsed = now - self._events_tokens_at
        tokens = min(EVENTS_FLUSH_BURST, self._events_tokens + elapsed * EVENTS_FLUSHES_PER_S)
        self._events_tokens_at = now
        self._events_tokens = tokens - 1
        return 0.0 if tokens >= 1 else (1 - tokens) / EVENTS_FLUSHES_PER_S

    def _schedule_events_flush(self, delay: float) -> None:
        if self.hub is not None:
            self.hub.call_later(delay, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._events_flush_due = None
        self._flush_events()  # Celery's: the current dispatcher's buffers (a failed publish is kept)

    def shutdown(self) -> None:
        """The events still buffered are sent before the dispatcher closes (one publish, bounded by the
        broker's timeouts; the events kept from a broker outage are left as Celery leaves them)."""
        dispatcher = self.event_dispatcher
        if dispatcher is not None:
            try:
                dispatcher.flush(errors=False, groups=True)
            except Exception as exc:
                log.debug("buffered task events not sent at shutdown: %s", exc)
        super().shutdown()


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
