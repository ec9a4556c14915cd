"""Publishing: the broker is a doorbell. The task name, and the Celery settings that carry kodo's
crash semantics (shared by the producer in the API and the workers). Queue names: `kodo.queues`.

With the broker down a publish fails within KODO_PUBLISH_TIMEOUT_MS (bounded connect and socket
timeouts, no kombu retry loop): the caller's row is marked unpublished and the request still
succeeds. `BrokerProbe` tells the reconciler when the broker answers again, and whether it may have
lost messages meanwhile, so those rows are published at once instead of after a republish window.

Importing it makes kombu's Redis channels keep one `redis.Redis` client object each instead of
building one per publish, delivery, ack and task event (see "one client object per channel" below).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import redis
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kodo.config import Settings
from kodo.queues import INTENT_QUEUE
from kodo.queues import WORKER_QUEUES as QUEUES

__all__ = [
    "QUEUES",
    "RUN_WORKFLOW_TASK",
    "BrokerProbe",
    "CeleryDispatcher",
    "celery_settings",
    "producer_app",
]

log = logging.getLogger(__name__)

RUN_WORKFLOW_TASK = "kodo.run_workflow"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


# ---- kombu's Redis transport: one client object per channel ------------------------------------------
#
# kombu's Redis channel builds a new `redis.Redis` object for every command it sends outside its
# consuming client (`Channel.conn_or_acquire` -> `_create_client`): every publish (the API's and the
# engine's doorbells, each task event), and in a worker every delivery (the QoS's unacked entry) and
# every ack. The object is a thin handle on the channel's connection pool (the sockets are pooled
# and reused already), but building one costs about 50 µs of CPU (an event dispatcher and a
# ~200-entry response-callback table per object): 7-10% of a worker's samples under load, and about a
# fifth of a publish. A client on a pool is thread-safe (each command checks a connection out of the
# pool and back), so each channel keeps the one it built for its pool and builds a new one only when
# that pool is gone: the channel was closed or forked (`_disconnect_pools` drops its pools), and then
# `Channel.pool` is read first, exactly as `_create_client` does, so a detached channel (its
# connection lost) fails exactly as before and `workers.consumer` tolerates that the same way.
# Sockets, their timeouts (KODO_PUBLISH_TIMEOUT_MS) and retries belong to the pool's connections,
# which are the same as before.

_CHANNEL_CLIENT = "_kodo_client"


def _channel_client(channel: Any) -> Any:
    pool = channel.pool  # a detached channel fails here, as kombu's own _create_client does
    client = channel.__dict__.get(_CHANNEL_CLIENT)
    if client is None or client.connection_pool is not pool:
        client = channel._create_client()
        channel.__dict__[_CHANNEL_CLIENT] = client
    return client


def _reuse_channel_clients(channel_cls: Any) -> None:
    original = channel_cls.conn_or_acquire
    if getattr(original, "_kodo_reuses_client", False):
        return

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        yield client if client else _channel_client(self)

    conn_or_acquire._kodo_reuses_client = True  # type: ignore[attr-defined]
    channel_cls.conn_or_acquire = conn_or_acquire


_reuse_channel_clients(kombu_redis.Channel)


def _transport_options(settings: Settings) -> dict[str, Any]:
    timeout_s = settings.publish_timeout_ms / 1000
    options: dict[str, Any] = {
        # Redis restores unacked messages after this; a duplicate is a no-op thanks to the lease,
        # and recovery never waits for it (the reconciler republishes from Postgres).
        "visibility_timeout": 3600,
        # Getting a channel for a publish connects once: kombu's default retries it for up to
        # broker_connection_timeout, sleeping 2 s between attempts (a start hung for seconds).
        "max_retries": 0,
    }
    if _is_redis(settings.broker_url):
        # A broker that does not answer (down host, frozen server) fails a publish in this time.
        # The worker's consumer reads only what select() says is there, so its blocking pop is
        # not cut short by the socket timeout.
        options |= {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    return options


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
        # A publish is tried once: kombu's retry policy (3 tries, 0.2 s apart) held a start 0.6 s
        # with the broker down. A failed publish marks its row unpublished (kodo.workflow.publisher).
        "task_publish_retry": False,
        "broker_connection_timeout": settings.publish_timeout_ms / 1000,
        "broker_transport_options": _transport_options(settings),
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
    """A Celery app with kodo's settings and no task: it publishes (the API, the ops CLI) or watches
    (Flower, `workers.flower_app`)."""
    app = Celery("kodo-producer")
    app.conf.update(celery_settings(settings))
    return app


BrokerState = Literal["up", "down", "reset"]


class BrokerProbe:
    """Does the broker answer, and may it have lost messages since the last look?

    `check()` says `up`, `down` (no answer within the publish timeout) or `reset`: it answers, but it
    did not since the last look, or it restarted or was flushed meanwhile (Redis without
    persistence loses its queues), or this is the first look (a worker that died may have held
    reserved messages), so messages published before may be gone. The reconciler calls
    it on every loop (every 100 ms while the broker is down) and, on `reset`, publishes at once
    every unclaimed runnable row published before (kodo.workflow.reconciler).

    Redis: a GET of a marker key on a kept connection with no retries (the marker, set once by the
    first reconciler that finds it missing, changes when the broker loses its data). Other brokers:
    a connection attempt, so only an outage is seen.
    """

    MARKER = "kodo:broker:incarnation"

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.timeout_s = settings.publish_timeout_ms / 1000
        self._client: redis.Redis[bytes] | None = None
        if _is_redis(settings.broker_url):
            self._client = redis.Redis.from_url(
                settings.broker_url,
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        self._seen: bytes | None = None
        self._up: bool | None = None
        self._declare_pending = False

    def check(self) -> BrokerState:
        try:
            marker = self._marker()
        except Exception as exc:
            if self._up is not False:
                log.warning("broker unreachable: %s", exc)
            self._up = False
            return "down"
        was_up, self._up = self._up, True
        seen, self._seen = self._seen, marker
        if was_up is None:
            # A reconciler that starts (alone, or embedded in a worker that a supervisor restarted
            # after a kill -9) cannot know what a process that died before it held: the messages it
            # had reserved are gone with it (a Redis transport redelivers them only after its
            # visibility timeout). Publish every unclaimed runnable row published before now.
            state: BrokerState = "reset"
        elif was_up is False:
            log.info("broker answers again")
            state = "reset"
        elif seen is not None and marker != seen:
            log.warning("broker lost its data (restarted or flushed): republishing")
            state = "reset"
        else:
            state = "up"
        if state == "reset":
            self._declare_pending = True
        if self._declare_pending:
            self._declare_pending = not self._declare()
        return state

    def _declare(self) -> bool:
        """Declare every queue again, with its binding; True when done. A Redis that lost its data
        lost the exchange-to-queue bindings too, and a message published to an exchange with no
        binding is dropped without an error (publishers keep believing their queues are declared).
        Tried again on the next look until it succeeds."""
        try:
            with self.app.connection_for_write() as conn:
                channel = conn.default_channel
                for queue in self.app.conf.task_queues or ():
                    queue(channel).declare()
        except Exception as exc:
            log.warning("could not declare the queues again: %s", exc)
            return False
        return True

    def _marker(self) -> bytes | None:
        if self._client is None:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=self.timeout_s)
            return None
        value = self._client.get(self.MARKER)
        if value is None:
            self._client.set(self.MARKER, uuid.uuid4().hex, nx=True)
            value = self._client.get(self.MARKER)
        return value if isinstance(value, bytes) else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
