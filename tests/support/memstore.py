"""An in-memory `Store` (kodo.workflow.ports) for fast unit tests of the engine: no Postgres, no broker.

`MemorySession` reproduces, method by method, the named queries of `kodo/db/queries/*.sql` that
`kodo.db.store.PgSession` runs: fencing by `lease_epoch` AND `executor_id`, status guards, the claim
rules (recovery attempts, MAX_RECOVERY_ATTEMPTS_EXCEEDED), typed waits, `wake_child_waiters`/`wake_receiver`,
`take_message` in `seq` order, ON CONFLICT DO NOTHING, deduplication ids unique per queue
(`DuplicateError`) and the republish backoff.

Concurrency model: one global `threading.RLock`, held for the whole of an outermost `transaction()`
block (so transactions of different threads are serialised, like conflicting row locks), with a
deep-copy snapshot taken at `transaction()` entry (a savepoint when nested) and restored if the block
raises. Outside a transaction every method is one atomic statement under the same lock.

Two sessions of the *same thread* can interleave (a workflow body calling the client, a reconciler
pass calling another, a test's `MemoryStore.before` interceptor). Where Postgres would make the second
one wait for a row lock the first holds until its commit (which, in one thread, never comes), the fake
raises `WouldBlockError` instead; `try_singleton` behaves like `pg_try_advisory_xact_lock` (held by
the session until its transaction ends; another session gets False meanwhile). Limitation: the
snapshots are of the whole state, so if an outer transaction rolls back after another session of the
same thread committed inside it, that commit is undone too; `MemoryStore.update`/`take_over` (another
process's committed write) are applied to the open snapshots as well, so they survive a rollback.

The product connection (`Session.handle`, `@transaction` functions, `on_transition` hooks) is the
session itself; product code in these tests writes to `session.product` (a dict that is part of the
transactional state, so it commits and rolls back with the checkpoint).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from kodo.config import QueueLimits, Settings
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
from kodo.workflow.client import Client
from kodo.workflow.engine import Engine, Outcome
from kodo.workflow.reconciler import Reconciler
from kodo.workflow.registry import REGISTRY, Registry
from kodo.workflow.scheduler import Schedule

P = ParamSpec("P")
R = TypeVar("R")

ENQUEUED = WorkflowStatus.ENQUEUED.value
PENDING = WorkflowStatus.PENDING.value
CANCELLED = WorkflowStatus.CANCELLED.value
EXCEEDED = WorkflowStatus.MAX_RECOVERY_ATTEMPTS_EXCEEDED.value
ACTIVE = (ENQUEUED, PENDING)

# What `get_workflow` (kodo/db/queries/workflows.sql) selects; `MemoryStore.row` gives every column.
GET_WORKFLOW_COLUMNS = (
    "workflow_uuid",
    "status",
    "name",
    "queue_name",
    "queue_partition_key",
    "priority",
    "application_version",
    "inputs",
    "output",
    "error",
    "executor_id",
    "lease_epoch",
    "lease_until_epoch_ms",
    "wait_reason",
    "wait_kind",
    "wait_key",
    "wake_at_epoch_ms",
    "parent_workflow_id",
    "forked_from",
    "recovery_attempts",
    "max_recovery_attempts",
    "noop_deliveries",
    "started_at_epoch_ms",
    "created_at",
    "updated_at",
)


class WouldBlockError(RuntimeError):
    """A session touched a row another open transaction of the same thread holds locked: on Postgres
    this statement would wait for a commit that can never come (a self-deadlock)."""


class IntegrityError(RuntimeError):
    """A primary-key or foreign-key violation Postgres would raise."""


def wait_reason(kind: str | None, key: str | None) -> str | None:
    """The generated column of migrations/sql/0005_*.sql."""
    if kind is None:
        return None
    return kind if key is None else f"{kind}:{key}"


def _like(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _public(row: Row) -> Row:
    out = dict(row)
    out["wait_reason"] = wait_reason(row["wait_kind"], row["wait_key"])
    out["updated_at_epoch_ms"] = row["updated_at"]
    return out


def _doorbell(row: Row) -> Doorbell:
    """The doorbell of a row a transition woke (the adapter's RETURNING columns)."""
    return Doorbell(row["workflow_uuid"], row["queue_name"], row["name"], row["queue_partition_key"])


def _clear_wait(row: Row) -> None:
    row["wait_kind"] = row["wait_key"] = row["wake_at_epoch_ms"] = None


@dataclass(eq=False)  # snapshots are told apart by identity
class _State:
    """Everything a transaction can roll back."""

    workflows: dict[str, Row] = field(default_factory=dict)
    outputs: dict[tuple[str, int], Row] = field(default_factory=dict)
    attempts: dict[tuple[str, int, int], Row] = field(default_factory=dict)
    notifications: dict[str, Row] = field(default_factory=dict)
    schedule_ticks: dict[tuple[str, int], Row] = field(default_factory=dict)
    product: dict[str, Any] = field(default_factory=dict)


def _statement(fn: Callable[Concatenate[MemorySession, P], R]) -> Callable[Concatenate[MemorySession, P], R]:
    """One statement: run the test's interceptors for it, then run it atomically under the lock."""

    name = fn.__name__

    def run(self: MemorySession, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.store._intercept(name)
        with self.store._lock:
            self.store.calls[name] += 1
            return fn(self, *args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = fn.__doc__
    return run


class MemorySession:
    """One "connection" to a `MemoryStore`; it is also its own product handle."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._depth = 0
        self._timers_at_commit = 0

    @property
    def handle(self) -> MemorySession:
        return self

    @property
    def product(self) -> dict[str, Any]:
        """The product "tables" (`@transaction` functions and hooks write here)."""
        return self.store._state.product

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        store = self.store
        with store._lock:
            snapshot = copy.deepcopy(store._state)
            store._snapshots.append(snapshot)
            self._depth += 1
            if self._depth == 1:
                store._open_transactions += 1
            try:
                yield
            except BaseException:
                store._state = snapshot
                if self._depth == 1:
                    self._timers_at_commit = 0
                raise
            else:
                if self._depth == 1 and self._timers_at_commit:
                    store._announce_timer(self._timers_at_commit)
                    self._timers_at_commit = 0
            finally:
                store._snapshots.remove(snapshot)
                self._depth -= 1
                if self._depth == 0:
                    store._open_transactions -= 1
                    store._end_transaction(self)

    # ---- helpers -----------------------------------------------------------------------------

    @property
    def _s(self) -> _State:
        return self.store._state

    def _wf(self, workflow_id: str) -> Row | None:
        return self._s.workflows.get(workflow_id)

    def _lock_row(self, workflow_id: str) -> None:
        """Take (or check) the row lock an UPDATE or SELECT ... FOR UPDATE would take."""
        holder = self.store._row_locks.get(workflow_id)
        if holder is not None and holder is not self and holder.in_transaction:
            raise WouldBlockError(f"row {workflow_id} is locked by another open transaction of this thread")
        if self.in_transaction:
            self.store._row_locks[workflow_id] = self

    def _locked_by_other(self, workflow_id: str) -> bool:
        holder = self.store._row_locks.get(workflow_id)
        return holder is not None and holder is not self and holder.in_transaction

    def _fenced(self, fence: Fence) -> Row | None:
        row = self._wf(fence.workflow_id)
        if row is None:
            return None
        self._lock_row(fence.workflow_id)
        if row["lease_epoch"] != fence.epoch or row["executor_id"] != fence.executor_id:
            return None
        return row

    def _announce(self) -> None:
        if self.in_transaction:
            self._timers_at_commit += 1  # NOTIFY is delivered at commit
        else:
            self.store._announce_timer(1)

    # ---- claiming ----------------------------------------------------------------------------

    @_statement
    def claim(
        self, workflow_id: str, executor_id: str, app_version: str, now: int, lease_until: int, node: str = ""
    ) -> Claim | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        self._lock_row(workflow_id)
        held = row["executor_id"] is not None
        expired = row["lease_until_epoch_ms"] is not None and row["lease_until_epoch_ms"] < now
        if (
            row["status"] not in ACTIVE
            or row["application_version"] != app_version
            or row["wait_kind"] is not None
            or (held and not expired)
        ):
            return None
        exceeded = held and row["recovery_attempts"] + 1 > row["max_recovery_attempts"]
        row["status"] = EXCEEDED if exceeded else PENDING
        row["executor_id"] = None if exceeded else executor_id
        row["lease_until_epoch_ms"] = None if exceeded else lease_until
        row["recovery_attempts"] += 1 if held else 0
        if exceeded:
            row["deduplication_id"] = None
        row["lease_epoch"] += 1
        row["publish_count"] = 0
        if row["started_at_epoch_ms"] is None:
            row["started_at_epoch_ms"] = now
        if row["workflow_deadline_epoch_ms"] is None and row["workflow_timeout_ms"] is not None:
            row["workflow_deadline_epoch_ms"] = now + row["workflow_timeout_ms"]
        row["updated_at"] = now
        recorded = [
            Recorded(o["function_id"], o["function_name"], o["output"], o["error"], o["child_workflow_id"])
            for (wid, _), o in sorted(self._s.outputs.items())
            if wid == workflow_id
        ]
        return Claim(
            workflow_id=workflow_id,
            status=WorkflowStatus(row["status"]),
            epoch=row["lease_epoch"],
            name=row["name"],
            inputs=row["inputs"],
            parent=row["parent_workflow_id"],
            recovery_attempts=row["recovery_attempts"],
            recorded=recorded,
            queue=row["queue_name"],
            retried=any(wid == workflow_id for wid, _, _ in self._s.attempts),
        )

    @_statement
    def count_noop(self, workflow_id: str, app_version: str) -> NoopReason | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        self._lock_row(workflow_id)
        row["noop_deliveries"] += 1
        if row["application_version"] != app_version:
            row["published_at_epoch_ms"] = 0
        return NoopReason(
            status=WorkflowStatus(row["status"]),
            executor_id=row["executor_id"],
            epoch=row["lease_epoch"],
            wait=wait_reason(row["wait_kind"], row["wait_key"]),
            app_version=row["application_version"],
        )

    @_statement
    def expire_lease(self, workflow_id: str, executor_id: str, epoch: int, now: int) -> None:
        row = self._wf(workflow_id)
        if row is None:
            return
        self._lock_row(workflow_id)
        if row["executor_id"] == executor_id and row["lease_epoch"] == epoch:
            row["lease_until_epoch_ms"] = 0
            row["published_at_epoch_ms"] = now

    # ---- a claimed run's writes (fenced) -----------------------------------------------------

    @_statement
    def record(
        self, fence: Fence, cp: Checkpoint, now: int, lease_until: int
    ) -> tuple[WorkflowStatus | None, bool]:
        row = self._fenced(fence)
        if row is None:
            return None, False
        row["lease_until_epoch_ms"] = lease_until
        row["updated_at"] = now
        key = (fence.workflow_id, cp.function_id)
        inserted = key not in self._s.outputs
        if inserted:
            self._s.outputs[key] = {
                "workflow_uuid": fence.workflow_id,
                "function_id": cp.function_id,
                "function_name": cp.function_name,
                "output": cp.output,
                "error": cp.error,
                "child_workflow_id": cp.child_workflow_id,
                "started_at_epoch_ms": cp.started_at,
                "completed_at_epoch_ms": now,
            }
        return WorkflowStatus(row["status"]), inserted

    @_statement
    def record_attempt(
        self, fence: Fence, attempt: int, function_id: int, error: str, started_at: int, now: int
    ) -> bool:
        row = self._wf(fence.workflow_id)  # a plain SELECT: no row lock
        if row is None or row["lease_epoch"] != fence.epoch or row["executor_id"] != fence.executor_id:
            return False
        key = (fence.workflow_id, function_id, attempt)
        if key in self._s.attempts:
            return False  # ON CONFLICT DO NOTHING RETURNING 1: no row
        self._s.attempts[key] = {
            "workflow_uuid": fence.workflow_id,
            "function_id": function_id,
            "attempt": attempt,
            "error": error,
            "started_at_epoch_ms": started_at,
            "completed_at_epoch_ms": now,
        }
        return True

    @_statement
    def step_attempts(self, workflow_id: str, function_id: int) -> list[Attempt]:
        return [
            Attempt(a["function_id"], a["attempt"], a["started_at_epoch_ms"], a["completed_at_epoch_ms"])
            for (wid, fid, _), a in sorted(self._s.attempts.items())
            if wid == workflow_id and fid == function_id
        ]

    @_statement
    def get_step(self, workflow_id: str, function_id: int) -> Recorded | None:
        o = self._s.outputs.get((workflow_id, function_id))
        if o is None:
            return None
        return Recorded(o["function_id"], o["function_name"], o["output"], o["error"], o["child_workflow_id"])

    @_statement
    def boundary(self, workflow_id: str) -> Boundary | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        return Boundary(WorkflowStatus(row["status"]), row["lease_epoch"], row["executor_id"])

    @_statement
    def lock_own(self, fence: Fence) -> WorkflowStatus | None:
        row = self._fenced(fence)
        return None if row is None else WorkflowStatus(row["status"])

    @_statement
    def lock(self, workflow_id: str) -> Row | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        self._lock_row(workflow_id)
        return {k: row[k] for k in ("status", "queue_name", "application_version", "parent_workflow_id")}

    @_statement
    def park(self, fence: Fence, wait: Wait, wake_at: int | None, now: int) -> bool:
        row = self._fenced(fence)
        if row is None or row["status"] != PENDING:
            return False
        row["wait_kind"], row["wait_key"], row["wake_at_epoch_ms"] = wait.kind.value, wait.key, wake_at
        row["executor_id"] = row["lease_until_epoch_ms"] = None
        row["updated_at"] = now
        if wake_at is not None:
            self._announce()
        return True

    @_statement
    def release(self, fence: Fence, now: int) -> bool:
        row = self._fenced(fence)
        if row is None:
            return False
        row["executor_id"] = row["lease_until_epoch_ms"] = None
        row["updated_at"] = now
        return True

    @_statement
    def abandon(self, fence: Fence, now: int) -> Doorbell | None:
        row = self._fenced(fence)
        if row is None or row["status"] != PENDING:
            return None
        row["lease_until_epoch_ms"] = 0
        row["published_at_epoch_ms"] = now
        return _doorbell(row)

    @_statement
    def complete(
        self, fence: Fence, status: WorkflowStatus, output: str | None, error: str | None, now: int
    ) -> Ended | None:
        row = self._fenced(fence)
        if row is None or row["status"] != PENDING:
            return None
        row["status"], row["output"], row["error"] = status.value, output, error
        row["deduplication_id"] = row["executor_id"] = row["lease_until_epoch_ms"] = None
        _clear_wait(row)
        row["updated_at"] = now
        return Ended(waiting=True)  # the fake has no queue limits: nothing to skip

    # ---- wakers ------------------------------------------------------------------------------

    @_statement
    def lock_child_waiters(self, parent: str, child: str) -> None:
        for wid in sorted(
            wid
            for wid, r in self._s.workflows.items()
            if wid == parent or (r["wait_kind"] == "child" and r["wait_key"] == child)
        ):
            self._lock_row(wid)

    @_statement
    def wake_child_waiters(self, parent: str, child: str, now: int) -> list[Doorbell]:
        bells = []
        for wid in sorted(self._s.workflows):
            row = self._s.workflows[wid]
            if row["status"] != PENDING:
                continue
            waits_for_it = row["wait_kind"] == "child" and row["wait_key"] == child
            last_child = (
                wid == parent
                and row["wait_kind"] == "children"
                and not any(
                    c["parent_workflow_id"] == parent and c["status"] in ACTIVE
                    for c in self._s.workflows.values()
                )
            )
            if not (waits_for_it or last_child):
                continue
            self._lock_row(wid)
            _clear_wait(row)
            row["published_at_epoch_ms"] = row["updated_at"] = now
            bells.append(_doorbell(row))
        return bells

    @_statement
    def wake_receiver(self, destination: str, topic: str, now: int) -> Doorbell | None:
        row = self._wf(destination)
        if row is None:
            return None
        self._lock_row(destination)
        if row["status"] != PENDING or row["wait_kind"] != "recv" or row["wait_key"] != topic:
            return None
        _clear_wait(row)
        row["published_at_epoch_ms"] = row["updated_at"] = now
        return _doorbell(row)

    @_statement
    def insert_notification(
        self, message_uuid: str, destination: str, topic: str, message: str, now: int
    ) -> bool:
        if message_uuid in self._s.notifications:
            return False
        if destination not in self._s.workflows:
            raise IntegrityError(f"notifications.destination_uuid {destination} does not exist")
        self._s.notifications[message_uuid] = {
            "message_uuid": message_uuid,
            "destination_uuid": destination,
            "topic": topic,
            "message": message,
            "seq": self.store._next_seq(),  # an identity: not rolled back, like a sequence
            "created_at_epoch_ms": now,
            "consumed_at_epoch_ms": None,
            "consumed_by_function_id": None,
        }
        return True

    @_statement
    def take_message(self, workflow_id: str, topic: str, function_id: int, now: int) -> str | None:
        waiting = [
            n
            for n in self._s.notifications.values()
            if n["destination_uuid"] == workflow_id
            and n["topic"] == topic
            and n["consumed_at_epoch_ms"] is None
        ]
        if not waiting:
            return None
        n = min(waiting, key=lambda n: int(n["seq"]))
        n["consumed_at_epoch_ms"], n["consumed_by_function_id"] = now, function_id
        return str(n["message"])

    # ---- workflows ---------------------------------------------------------------------------

    @_statement
    def insert_workflow(self, new: NewWorkflow, now: int, *, admit: bool = False) -> Doorbell | None:
        if new.workflow_id in self._s.workflows:
            return None  # ON CONFLICT (workflow_uuid) DO NOTHING
        self._lock_row(new.workflow_id)  # a concurrent insert of the same key waits for our commit
        if new.deduplication_id is not None and any(
            r["queue_name"] == new.queue and r["deduplication_id"] == new.deduplication_id
            for r in self._s.workflows.values()
        ):
            raise DuplicateError(new.deduplication_id)
        self._s.workflows[new.workflow_id] = {
            "workflow_uuid": new.workflow_id,
            "status": ENQUEUED,
            "name": new.name,
            "class_name": None,
            "config_name": None,
            "queue_name": new.queue,
            "queue_partition_key": new.partition_key,
            "priority": new.priority,
            "deduplication_id": new.deduplication_id,
            "application_version": new.app_version,
            "application_id": None,
            "inputs": new.inputs,
            "output": None,
            "error": None,
            "executor_id": None,
            "lease_epoch": 0,
            "lease_until_epoch_ms": None,
            "wait_kind": None,
            "wait_key": None,
            "wake_at_epoch_ms": None,
            "parent_workflow_id": new.parent,
            "forked_from": new.forked_from,
            "recovery_attempts": 0,
            "max_recovery_attempts": new.max_recovery_attempts,
            "noop_deliveries": 0,
            "published_at_epoch_ms": now,
            "publish_count": 0,
            "started_at_epoch_ms": None,
            "workflow_timeout_ms": new.timeout_ms,
            "workflow_deadline_epoch_ms": None,
            "created_at": now,
            "updated_at": now,
        }
        return Doorbell(new.workflow_id, new.queue, new.name, new.partition_key)

    @_statement
    def get_workflow(self, workflow_id: str) -> Row | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        full = _public(row)
        return {k: full[k] for k in GET_WORKFLOW_COLUMNS}

    @_statement
    def lock_child(self, child: str) -> Row | None:
        row = self._wf(child)
        if row is None:
            return None
        self._lock_row(child)  # FOR SHARE; this fake has only one kind of row lock
        return {k: row[k] for k in ("workflow_uuid", "status", "output", "error", "parent_workflow_id")}

    @_statement
    def child_states(self, parent: str) -> list[Row]:
        recorded = {
            o["child_workflow_id"]
            for (wid, _), o in self._s.outputs.items()
            if wid == parent and o["function_name"] == "kodo.start_child"
        } | {
            child
            for (wid, _), o in self._s.outputs.items()
            if wid == parent and o["function_name"] == "kodo.start_children"
            for child in json.loads(o["output"])
        }
        return [
            {k: r[k] for k in ("workflow_uuid", "status", "output", "error", "parent_workflow_id")}
            for wid, r in self._s.workflows.items()
            if r["parent_workflow_id"] == parent or wid in recorded
        ]

    @_statement
    def cancel(self, workflow_id: str, now: int) -> bool:
        row = self._wf(workflow_id)
        if row is None:
            return False
        self._lock_row(workflow_id)
        if row["status"] not in ACTIVE:
            return False
        row["status"] = CANCELLED
        _clear_wait(row)
        row["deduplication_id"] = None
        row["updated_at"] = now
        return True

    @_statement
    def resume(self, workflow_id: str, now: int) -> Doorbell | None:
        row = self._wf(workflow_id)
        if row is None:
            return None
        self._lock_row(workflow_id)
        if row["status"] not in (CANCELLED, ENQUEUED, EXCEEDED):
            return None
        row["status"] = ENQUEUED if row["executor_id"] is None else PENDING
        row["recovery_attempts"] = 0
        _clear_wait(row)
        row["published_at_epoch_ms"] = row["updated_at"] = now
        return _doorbell(row)

    @_statement
    def max_function_id(self, workflow_id: str) -> int:
        return max((fid for (wid, fid) in self._s.outputs if wid == workflow_id), default=0)

    @_statement
    def fork_copy(self, new_workflow_id: str, workflow_id: str, start_step: int) -> None:
        copies = [
            dict(o, workflow_uuid=new_workflow_id)
            for (wid, fid), o in sorted(self._s.outputs.items())
            if wid == workflow_id and fid < start_step
        ]
        if copies and new_workflow_id not in self._s.workflows:
            raise IntegrityError(f"operation_outputs.workflow_uuid {new_workflow_id} does not exist")
        for o in copies:
            if (new_workflow_id, o["function_id"]) in self._s.outputs:
                raise IntegrityError(f"operation_outputs ({new_workflow_id}, {o['function_id']}) exists")
        for o in copies:
            self._s.outputs[(new_workflow_id, o["function_id"])] = o

    @_statement
    def list_steps(self, workflow_id: str) -> list[Row]:
        return [
            {k: v for k, v in o.items() if k != "workflow_uuid"}
            for (wid, _), o in sorted(self._s.outputs.items())
            if wid == workflow_id
        ]

    @_statement
    def renew_leases(self, executor_id: str, lease_until: int) -> None:
        for wid, row in self._s.workflows.items():
            if row["executor_id"] == executor_id and row["lease_until_epoch_ms"] != 0:
                self._lock_row(wid)
                row["lease_until_epoch_ms"] = lease_until

    @_statement
    def mark_unpublished(self, workflow_id: str) -> None:
        row = self._wf(workflow_id)
        if row is None:
            return
        self._lock_row(workflow_id)
        if row["status"] in ACTIVE:
            row["published_at_epoch_ms"] = row["publish_count"] = 0

    # ---- reconciler --------------------------------------------------------------------------

    @_statement
    def wake_due_timers(self, now: int, app_version: str, limit: int) -> list[Doorbell]:
        due = sorted(
            (
                r
                for r in self._s.workflows.values()
                if r["wait_kind"] is not None
                and r["wake_at_epoch_ms"] is not None
                and r["wake_at_epoch_ms"] <= now
                and r["status"] == PENDING
                and r["application_version"] == app_version
                and not self._locked_by_other(r["workflow_uuid"])  # SKIP LOCKED
            ),
            key=lambda r: int(r["wake_at_epoch_ms"]),
        )[:limit]
        bells = []
        for r in due:
            self._lock_row(r["workflow_uuid"])
            _clear_wait(r)
            r["published_at_epoch_ms"] = r["updated_at"] = now
            bells.append(_doorbell(r))
        return bells

    # ---- admission: the fake has no queue limits (admission is tested on Postgres) -----------

    @_statement
    def limited_queues(self) -> frozenset[str]:
        return frozenset()

    @_statement
    def admit(self, queue: str, app_version: str, now: int, hints: list[str]) -> list[Doorbell]:
        rows = (self._wf(h) for h in hints)
        return [
            _doorbell(r) for r in rows if r is not None and r["status"] in ACTIVE and r["wait_kind"] is None
        ]

    @_statement
    def due_windows(self, now: int) -> list[str]:
        return []

    @_statement
    def write_env_limits(self, limits: Mapping[str, QueueLimits], now: int) -> None:
        pass

    @_statement
    def next_wake_at(self, app_version: str) -> int | None:
        return min(
            (
                int(r["wake_at_epoch_ms"])
                for r in self._s.workflows.values()
                if r["wait_kind"] is not None
                and r["wake_at_epoch_ms"] is not None
                and r["status"] == PENDING
                and r["application_version"] == app_version
            ),
            default=None,
        )

    @_statement
    def leases_on_host(self, host_prefix: str) -> list[Row]:
        return [
            {k: r[k] for k in ("workflow_uuid", "executor_id", "lease_epoch")}
            for r in self._s.workflows.values()
            if _like(host_prefix, r["executor_id"])
            and r["status"] in (PENDING, CANCELLED, ENQUEUED)
            and r["lease_until_epoch_ms"] is not None
            and r["lease_until_epoch_ms"] != 0
        ]

    @_statement
    def republish_stale(
        self, now: int, app_version: str, limit: int, republish_after: int, broker_reset: int = 0
    ) -> list[Doorbell]:
        def stale(r: Row) -> bool:
            lease = r["lease_until_epoch_ms"]
            published = r["published_at_epoch_ms"] or 0
            return bool(
                r["status"] in ACTIVE
                and r["application_version"] == app_version
                and r["wait_kind"] is None
                and (r["executor_id"] is None or (lease is not None and lease < now))
                and (
                    published < now - republish_after * (1 << min(int(r["publish_count"]), 6))
                    or published < broker_reset
                )
                and not self._locked_by_other(r["workflow_uuid"])  # SKIP LOCKED
            )

        rows = sorted((r for r in self._s.workflows.values() if stale(r)), key=lambda r: int(r["created_at"]))
        bells = []
        for r in rows[:limit]:
            self._lock_row(r["workflow_uuid"])
            r["published_at_epoch_ms"] = now
            r["publish_count"] += 1
            bells.append(_doorbell(r))
        return bells

    @_statement
    def expired_workflows(self, now: int, app_version: str, limit: int) -> list[str]:
        rows = sorted(
            (
                r
                for r in self._s.workflows.values()
                if r["status"] in ACTIVE
                and r["workflow_deadline_epoch_ms"] is not None
                and r["workflow_deadline_epoch_ms"] < now
                and r["application_version"] == app_version
            ),
            key=lambda r: int(r["workflow_deadline_epoch_ms"]),
        )
        return [str(r["workflow_uuid"]) for r in rows[:limit]]

    @_statement
    def try_singleton(self, key: int) -> bool:
        holder = self.store._advisory.get(key)
        if holder is not None and holder is not self and holder.in_transaction:
            return False
        if self.in_transaction:
            self.store._advisory[key] = self  # until the end of this transaction
        return True  # outside a transaction the lock ends with the statement

    # ---- scheduler ---------------------------------------------------------------------------

    @_statement
    def last_schedule_tick(self, schedule_name: str) -> int | None:
        return max((ms for (name, ms) in self._s.schedule_ticks if name == schedule_name), default=None)

    @_statement
    def insert_schedule_tick(self, schedule_name: str, tick_ms: int, workflow_id: str, now: int) -> bool:
        key = (schedule_name, tick_ms)
        if key in self._s.schedule_ticks:
            return False  # ON CONFLICT (schedule_name, tick_epoch_ms) DO NOTHING
        self._lock_row(f"schedule_ticks:{schedule_name}:{tick_ms}")  # the new key, until our commit
        self._s.schedule_ticks[key] = {
            "schedule_name": schedule_name,
            "tick_epoch_ms": tick_ms,
            "workflow_uuid": workflow_id,
            "created_at_epoch_ms": now,
        }
        return True


class MemoryTimerListener:
    """`LISTEN kodo_timer`: each `wait` consumes one announcement made since the listener started."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        with store._timer_cond:
            self._seen = store._timer_announcements

    def wait(self, timeout_s: float) -> None:
        cond = self.store._timer_cond
        with cond:
            cond.wait_for(lambda: self.store._timer_announcements > self._seen, timeout_s)
            if self.store._timer_announcements > self._seen:
                self._seen += 1


class MemoryStore:
    """The `Store` port over plain dicts (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()
        self._seq = 0
        self._open_transactions = 0
        self._snapshots: list[_State] = []  # of the open transactions and savepoints
        self._row_locks: dict[str, MemorySession] = {}
        self._advisory: dict[int, MemorySession] = {}
        self._timer_cond = threading.Condition()
        self._timer_announcements = 0
        self._interceptors: dict[str, list[Callable[[], object]]] = {}
        self.calls: Counter[str] = Counter()

    # ---- the port ----------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[MemorySession]:
        s = MemorySession(self)
        try:
            yield s
        finally:
            assert not s.in_transaction, "a session was returned with its transaction open"

    def bind(self, handle: Any) -> MemorySession:
        if not isinstance(handle, MemorySession) or handle.store is not self:
            raise TypeError(f"not a session of this MemoryStore: {handle!r}")
        return handle

    @contextmanager
    def listen_timers(self) -> Iterator[MemoryTimerListener]:
        yield MemoryTimerListener(self)

    @contextmanager
    def product_connection(self, transaction: bool = False) -> Iterator[MemorySession]:
        with self.session() as s:
            if transaction:
                with s.transaction():
                    yield s
            else:
                yield s

    # ---- internals ---------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _announce_timer(self, n: int) -> None:
        with self._timer_cond:
            self._timer_announcements += n
            self._timer_cond.notify_all()

    def _end_transaction(self, session: MemorySession) -> None:
        for wid in [k for k, holder in self._row_locks.items() if holder is session]:
            del self._row_locks[wid]
        for key in [k for k, holder in self._advisory.items() if holder is session]:
            del self._advisory[key]

    def _intercept(self, method: str) -> None:
        with self._lock:
            todo = self._interceptors.pop(method, [])
        for fn in todo:
            fn()

    # ---- for tests ---------------------------------------------------------------------------

    def before(self, method: str, fn: Callable[[], object]) -> None:
        """Run `fn` once, just before the next call of session method `method` (a concurrent actor)."""
        if not hasattr(MemorySession, method):
            raise AttributeError(f"MemorySession has no method {method}")
        with self._lock:
            self._interceptors.setdefault(method, []).append(fn)

    def in_transaction(self) -> bool:
        """Whether any session has a transaction open right now."""
        with self._lock:
            return self._open_transactions > 0

    @property
    def product(self) -> dict[str, Any]:
        return self._state.product

    def row(self, workflow_id: str) -> Row:
        """Every column of the workflow's row (a copy), wait_reason included."""
        with self._lock:
            return _public(self._state.workflows[workflow_id])

    def rows(self) -> list[Row]:
        with self._lock:
            return [_public(r) for r in self._state.workflows.values()]

    def update(self, workflow_id: str, **columns: Any) -> None:
        """Write columns of a row as another process would, in a transaction of its own that commits
        at once: an open transaction that rolls back later keeps it. Raises WouldBlockError if an open
        transaction holds the row locked (the other process would wait for its commit)."""
        with self._lock:
            row = self._state.workflows[workflow_id]
            unknown = set(columns) - set(row)
            if unknown:
                raise KeyError(f"no such columns: {sorted(unknown)}")
            holder = self._row_locks.get(workflow_id)
            if holder is not None and holder.in_transaction:
                raise WouldBlockError(f"row {workflow_id} is locked by an open transaction")
            row.update(columns)
            for snapshot in self._snapshots:
                if workflow_id in snapshot.workflows:
                    snapshot.workflows[workflow_id].update(columns)

    def take_over(
        self, workflow_id: str, executor_id: str = "elsewhere:1:takeover", lease_until: int = 2**62
    ) -> int:
        """Another executor claims the row (lease epoch + 1), committed at once; returns the new epoch."""
        with self._lock:
            epoch = int(self._state.workflows[workflow_id]["lease_epoch"]) + 1
            self.update(
                workflow_id,
                status=PENDING,
                lease_epoch=epoch,
                executor_id=executor_id,
                lease_until_epoch_ms=lease_until,
            )
            return epoch

    def steps(self, workflow_id: str) -> list[Row]:
        """operation_outputs of a workflow, by function id (all columns)."""
        with self._lock:
            return [dict(o) for (wid, _), o in sorted(self._state.outputs.items()) if wid == workflow_id]

    def step_attempts(self, workflow_id: str) -> list[Row]:
        with self._lock:
            return [dict(a) for (wid, _, _), a in sorted(self._state.attempts.items()) if wid == workflow_id]

    def schedule_ticks(self, schedule_name: str) -> list[Row]:
        """dbos.schedule_ticks of a schedule, oldest tick first."""
        with self._lock:
            return [
                dict(t)
                for (name, _), t in sorted(self._state.schedule_ticks.items())
                if name == schedule_name
            ]

    def messages(self, destination: str) -> list[Row]:
        """notifications of a destination, in seq order."""
        with self._lock:
            rows = [
                dict(n) for n in self._state.notifications.values() if n["destination_uuid"] == destination
            ]
        return sorted(rows, key=lambda n: int(n["seq"]))


class PublishFailedError(ConnectionError):
    """The fake broker is down."""


class MemoryDispatcher:
    """The broker: records every publish (a doorbell) and queues it for `deliver`.

    `fail = True` makes publishes raise (the publisher must then mark the row unpublished).
    Publishes made while a transaction of `store` is open are collected in `during_transaction`.
    """

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store
        self.fail = False
        self.published: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []
        self.during_transaction: list[tuple[str, str]] = []
        self.queue: deque[tuple[str, str]] = deque()
        self.labels: dict[str, tuple[str | None, str | None]] = {}  # the last (name, partition key) rung

    def publish(
        self, workflow_id: str, queue: str, *, name: str | None = None, partition_key: str | None = None
    ) -> None:
        self.labels[workflow_id] = (name, partition_key)
        if self.store is not None and self.store.in_transaction():
            self.during_transaction.append((workflow_id, queue))
        if self.fail:
            self.failed.append((workflow_id, queue))
            raise PublishFailedError(f"broker down: {workflow_id}")
        self.published.append((workflow_id, queue))
        self.queue.append((workflow_id, queue))

    def count(self, workflow_id: str) -> int:
        """How many times `workflow_id` was published."""
        return sum(1 for wid, _ in self.published if wid == workflow_id)

    def deliver(self, engine: Engine, limit: int = 100) -> list[tuple[str, Outcome]]:
        """Act as the workers: execute queued doorbells (and those they ring) until none is left."""
        done: list[tuple[str, Outcome]] = []
        while self.queue:
            if len(done) >= limit:
                raise RuntimeError(f"more than {limit} deliveries: {done[-5:]}")
            wid, _ = self.queue.popleft()
            done.append((wid, engine.execute(wid)))
        return done


class FakeClock:
    """Stands in for `kodo.clock.now_ms` (monkeypatch it)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


class Fake(NamedTuple):
    engine: Engine
    client: Client
    store: MemoryStore
    dispatcher: MemoryDispatcher

    def reconciler(self, schedules: Sequence[Schedule] = ()) -> Reconciler:
        """The standard passes (timers, dead leases, stale rows, timeouts; the scheduler when
        `schedules` are given) on this fake."""
        e = self.engine
        return Reconciler.standard(
            e.settings,
            self.store,
            e.publisher,
            cancel=self.client.cancel,
            start=self.client.start_txn,
            schedules=schedules,
        )


def make_engine(
    settings: Settings | None = None, *, registry: Registry = REGISTRY, env: dict[str, str] | None = None
) -> Fake:
    """An Engine on a fresh MemoryStore and MemoryDispatcher (Settings defaults, or `env` on top)."""
    store = MemoryStore()
    dispatcher = MemoryDispatcher(store)
    engine = Engine(settings or Settings.from_env(env or {}), store, dispatcher, registry=registry)
    return Fake(engine, Client(engine), store, dispatcher)
