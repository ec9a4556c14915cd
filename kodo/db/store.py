"""The Postgres adapter of the workflow layer's `Store` port: every `dbos.*` statement the engine runs.

Each method is one named query of `kodo/db/queries/*.sql`; a `PgSession` is one pooled connection,
autocommitting unless inside `transaction()`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg

from kodo.config import QueueLimits
from kodo.db.limits import write_env
from kodo.db.pool import Conn, Database, connect
from kodo.db.queries import Q
from kodo.records import (
    Attempt,
    Boundary,
    Checkpoint,
    Claim,
    Doorbell,
    DuplicateError,
    Ended,
    Fence,
    NewWorkflow,
    NoopReason,
    Recorded,
    Row,
)
from kodo.states import Wait, WorkflowStatus


def store_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached (the run is recovered later), as opposed to a failing step."""
    return isinstance(exc, psycopg.OperationalError)


def _doorbell(row: Row) -> Doorbell:
    """A row a transition returned (`RETURNING workflow_uuid, queue_name, name, queue_partition_key`)."""
    return Doorbell(row["workflow_uuid"], row["queue_name"], row.get("name"), row.get("queue_partition_key"))


def _bell(row: Row | None) -> Doorbell | None:
    return None if row is None else _doorbell(row)


def _fence(f: Fence) -> dict[str, Any]:
    return {"workflow_uuid": f.workflow_id, "epoch": f.epoch, "executor_id": f.executor_id}


def _json_list(value: Any) -> list[dict[str, Any]]:
    return list(json.loads(value) if isinstance(value, str) else value or [])


class PgSession:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @property
    def handle(self) -> Conn:
        return self.conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def _one(self, sql: LiteralString, params: dict[str, Any] | None = None) -> Row | None:
        return self.conn.execute(sql, params).fetchone()

    def _all(self, sql: LiteralString, params: dict[str, Any]) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    # ---- claiming --------------------------------------------------------------------------

    def claim(
        self, workflow_id: str, executor_id: str, app_version: str, now: int, lease_until: int, node: str = ""
    ) -> Claim | None:
        row = self._one(
            Q["claim_workflow"],
            {
                "workflow_uuid": workflow_id,
                "executor_id": executor_id,
                "node": node or executor_id.rsplit(":", 1)[0],  # default: the executor's host:pid
                "app_version": app_version,
                "now": now,
                "lease_until": lease_until,
            },
        )
        if row is None:
            return None
        return Claim(
            workflow_id=workflow_id,
            status=WorkflowStatus(row["status"]),
            epoch=int(row["lease_epoch"]),
            name=row["name"],
            inputs=row["inputs"],
            parent=row["parent_workflow_id"],
            recovery_attempts=int(row["recovery_attempts"]),
            recorded=[Recorded(**r) for r in _json_list(row["recorded"])],
            queue=row["queue_name"],
            retried=bool(row["retried"]),
        )

    def count_noop(self, workflow_id: str, app_version: str) -> NoopReason | None:
        row = self._one(Q["count_noop_delivery"], {"workflow_uuid": workflow_id, "app_version": app_version})
        if row is None:
            return None
        return NoopReason(
            status=WorkflowStatus(row["status"]),
            executor_id=row["executor_id"],
            epoch=int(row["lease_epoch"]),
            wait=row["wait_reason"],
            app_version=row["application_version"],
        )

    def expire_lease(self, workflow_id: str, executor_id: str, epoch: int, now: int) -> None:
        self._one(
            Q["expire_lease"],
            {"workflow_uuid": workflow_id, "executor_id": executor_id, "epoch": epoch, "now": now},
        )

    # ---- a claimed run's writes (fenced) ---------------------------------------------------

    def record(
        self, fence: Fence, cp: Checkpoint, now: int, lease_until: int
    ) -> tuple[WorkflowStatus | None, bool]:
        row = self._one(
            Q["record_step"],
            {
                **_fence(fence),
                "function_id": cp.function_id,
                "function_name": cp.function_name,
                "output": cp.output,
                "error": cp.error,
                "child_workflow_id": cp.child_workflow_id,
                "started_at": cp.started_at,
                "now": now,
                "lease_until": lease_until,
            },
        )
        if row is None or row["status"] is None:
            return None, False
        return WorkflowStatus(row["status"]), int(row["inserted"]) > 0

    def record_attempt(
        self, fence: Fence, attempt: int, function_id: int, error: str, started_at: int, now: int
    ) -> bool:
        row = self._one(
            Q["record_attempt"],
            {
                **_fence(fence),
                "function_id": function_id,
                "attempt": attempt,
                "error": error,
                "started_at": started_at,
                "now": now,
            },
        )
        return row is not None

    def step_attempts(self, workflow_id: str, function_id: int) -> list[Attempt]:
        rows = self._all(Q["step_attempts"], {"workflow_uuid": workflow_id, "function_id": function_id})
        return [Attempt(**r) for r in rows]

    def get_step(self, workflow_id: str, function_id: int) -> Recorded | None:
        row = self._one(Q["get_step"], {"workflow_uuid": workflow_id, "function_id": function_id})
        return None if row is None else Recorded(**row)

    def boundary(self, workflow_id: str) -> Boundary | None:
        row = self._one(Q["check_boundary"], {"workflow_uuid": workflow_id})
        if row is None:
            return None
        return Boundary(WorkflowStatus(row["status"]), int(row["lease_epoch"]), row["executor_id"])

    def lock_own(self, fence: Fence) -> WorkflowStatus | None:
        row = self._one(Q["lock_own"], _fence(fence))
        return None if row is None else WorkflowStatus(row["status"])

    def lock(self, workflow_id: str) -> Row | None:
        return self._one(Q["lock_workflow"], {"workflow_uuid": workflow_id})

    def park(self, fence: Fence, wait: Wait, wake_at: int | None, now: int) -> bool:
        row = self._one(
            Q["park_workflow"],
            {
                **_fence(fence),
                "wait_kind": wait.kind.value,
                "wait_key": wait.key,
                "wake_at": wake_at,
                "now": now,
            },
        )
        if row is not None and wake_at is not None:
            self._one(Q["notify_timer"], {"wake_at": wake_at})
        return row is not None

    def release(self, fence: Fence, now: int) -> bool:
        return self._one(Q["release_lease"], {**_fence(fence), "now": now}) is not None

    def abandon(self, fence: Fence, now: int) -> Doorbell | None:
        return _bell(self._one(Q["abandon_lease"], {**_fence(fence), "now": now}))

    def complete(
        self, fence: Fence, status: WorkflowStatus, output: str | None, error: str | None, now: int
    ) -> Ended | None:
        row = self._one(
            Q["complete_workflow"],
            {**_fence(fence), "status": status.value, "output": output, "error": error, "now": now},
        )
        return None if row is None else Ended(bool(row["waiting"]))

    # ---- wakers ----------------------------------------------------------------------------

    def lock_child_waiters(self, parent: str, child: str) -> None:
        self._all(Q["lock_child_waiters"], {"parent": parent, "child": child})

    def wake_child_waiters(self, parent: str, child: str, now: int) -> list[Doorbell]:
        rows = self._all(Q["wake_child_waiters"], {"parent": parent, "child": child, "now": now})
        return [_doorbell(r) for r in rows]

    def wake_receiver(self, destination: str, topic: str, now: int) -> Doorbell | None:
        return _bell(self._one(Q["wake_receiver"], {"destination": destination, "topic": topic, "now": now}))

    def insert_notification(
        self, message_uuid: str, destination: str, topic: str, message: str, now: int
    ) -> bool:
        row = self._one(
            Q["insert_notification"],
            {
                "message_uuid": message_uuid,
                "destination": destination,
                "topic": topic,
                "message": message,
                "now": now,
            },
        )
        return row is not None

    def take_message(self, workflow_id: str, topic: str, function_id: int, now: int) -> str | None:
        row = self._one(
            Q["take_message"],
            {"workflow_uuid": workflow_id, "topic": topic, "now": now, "function_id": function_id},
        )
        return None if row is None else str(row["message"])

    # ---- workflows -------------------------------------------------------------------------

    def insert_workflow(self, new: NewWorkflow, now: int, *, admit: bool = False) -> Doorbell | None:
        params = {
            "workflow_uuid": new.workflow_id,
            "name": new.name,
            "queue_name": new.queue,
            "partition_key": new.partition_key,
            "priority": new.priority,
            "deduplication_id": new.deduplication_id,
            "app_version": new.app_version,
            "inputs": new.inputs,
            "parent": new.parent,
            "forked_from": new.forked_from,
            "max_recovery_attempts": new.max_recovery_attempts,
            "timeout_ms": new.timeout_ms,
            "now": now,
        }
        query = Q["insert_workflow_admitted"] if admit else Q["insert_workflow"]
        if new.deduplication_id is None:  # only the deduplication index can raise: no savepoint needed
            row = self._one(query, params)
        else:
            try:
                # A savepoint (inside a transaction) keeps a clash from poisoning the caller's work.
                with self.conn.transaction():
                    row = self._one(query, params)
            except psycopg.errors.UniqueViolation as exc:
                raise DuplicateError(new.deduplication_id) from exc
        if row is None:
            return None
        return Doorbell(new.workflow_id, new.queue, new.name, new.partition_key, bool(row.get("admitted")))

    def get_workflow(self, workflow_id: str) -> Row | None:
        return self._one(Q["get_workflow"], {"workflow_uuid": workflow_id})

    def lock_child(self, child: str) -> Row | None:
        return self._one(Q["lock_child"], {"workflow_uuid": child})

    def child_states(self, parent: str) -> list[Row]:
        return self._all(Q["child_states"], {"parent": parent})

    def cancel(self, workflow_id: str, now: int) -> bool:
        return self._one(Q["cancel_workflow"], {"workflow_uuid": workflow_id, "now": now}) is not None

    def resume(self, workflow_id: str, now: int) -> Doorbell | None:
        return _bell(self._one(Q["resume_workflow"], {"workflow_uuid": workflow_id, "now": now}))

    def max_function_id(self, workflow_id: str) -> int:
        row = self._one(Q["max_function_id"], {"workflow_uuid": workflow_id})
        return int(row["max_id"]) if row is not None else 0

    def fork_copy(self, new_workflow_id: str, workflow_id: str, start_step: int) -> None:
        self.conn.execute(
            Q["fork_copy_outputs"],
            {"new_workflow_uuid": new_workflow_id, "workflow_uuid": workflow_id, "start_step": start_step},
        )

    def list_steps(self, workflow_id: str) -> list[Row]:
        return self._all(Q["list_steps"], {"workflow_uuid": workflow_id})

    def renew_leases(self, executor_id: str, lease_until: int) -> None:
        self.conn.execute(Q["renew_leases"], {"executor_id": executor_id, "lease_until": lease_until})

    def mark_unpublished(self, workflow_id: str) -> None:
        self.conn.execute(Q["mark_unpublished"], {"workflow_uuid": workflow_id})

    # ---- reconciler ------------------------------------------------------------------------

    def wake_due_timers(self, now: int, app_version: str, limit: int) -> list[Doorbell]:
        rows = self._all(Q["wake_due_timers"], {"now": now, "app_version": app_version, "limit": limit})
        return [_doorbell(r) for r in rows]

    def limited_queues(self) -> frozenset[str]:
        return frozenset(r["queue_name"] for r in self.conn.execute(Q["limited_queues"]).fetchall())

    def admit(self, queue: str, app_version: str, now: int, hints: list[str]) -> list[Doorbell]:
        rows = self._all(Q["admit"], {"queue": queue, "app_version": app_version, "now": now, "hint": hints})
        return [_doorbell(r) for r in rows]

    def due_windows(self, now: int) -> list[str]:
        return [r["queue_name"] for r in self._all(Q["due_windows"], {"now": now})]

    def write_env_limits(self, limits: Mapping[str, QueueLimits], now: int) -> None:
        with self.conn.transaction():
            write_env(self.conn, limits, now)

    def next_wake_at(self, app_version: str) -> int | None:
        row = self._one(Q["next_wake_at"], {"app_version": app_version})
        return None if row is None or row["wake_at"] is None else int(row["wake_at"])

    def leases_on_host(self, host_prefix: str) -> list[Row]:
        return self._all(Q["leases_on_host"], {"host_prefix": host_prefix})

    def republish_stale(
        self, now: int, app_version: str, limit: int, republish_after: int, broker_reset: int = 0
    ) -> list[Doorbell]:
        rows = self._all(
            Q["republish_stale"],
            {
                "now": now,
                "app_version": app_version,
                "limit": limit,
                "republish_after": republish_after,
                "broker_reset": broker_reset,
            },
        )
        return [_doorbell(r) for r in rows]

    def expired_workflows(self, now: int, app_version: str, limit: int) -> list[str]:
        rows = self._all(Q["expired_workflows"], {"now": now, "app_version": app_version, "limit": limit})
        return [str(r["workflow_uuid"]) for r in rows]

    def try_singleton(self, key: int) -> bool:
        row = self._one(Q["try_singleton"], {"key": key})
        return bool(row and row["got"])

    # ---- scheduler -------------------------------------------------------------------------

    def last_schedule_tick(self, schedule_name: str) -> int | None:
        row = self._one(Q["last_schedule_tick"], {"schedule_name": schedule_name})
        return None if row is None or row["tick_epoch_ms"] is None else int(row["tick_epoch_ms"])

    def insert_schedule_tick(self, schedule_name: str, tick_ms: int, workflow_id: str, now: int) -> bool:
        params = {
            "schedule_name": schedule_name,
            "tick_epoch_ms": tick_ms,
            "workflow_uuid": workflow_id,
            "now": now,
        }
        return self._one(Q["insert_schedule_tick"], params) is not None


class PgTimerListener:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def wait(self, timeout_s: float) -> None:
        for _ in self.conn.notifies(timeout=timeout_s, stop_after=1):
            pass


class PgStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def session(self) -> Iterator[PgSession]:
        with self.db.conn() as c:
            yield PgSession(c)

    def bind(self, handle: Any) -> PgSession:
        return PgSession(handle)

    @contextmanager
    def listen_timers(self) -> Iterator[PgTimerListener]:
        with connect(self.db.url) as c:
            c.execute(Q["listen_timers"])
            yield PgTimerListener(c)

    @contextmanager
    def product_connection(self, transaction: bool = False) -> Iterator[Conn]:
        with self.db.tx() if transaction else self.db.conn() as c:
            yield c
