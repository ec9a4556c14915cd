"""Operations on workflows from outside a workflow body: start, send, cancel, resume, fork, read.

Every write is one transaction, and publishing happens after it commits. A crash between the two
loses nothing: the row is ENQUEUED (or woken) and the reconciler republishes it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import psycopg

from kodo import clock
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import ConflictError, NotFoundError, UnknownWorkflowError
from kodo.workflow import serde
from kodo.workflow.context import DEFAULT_TOPIC
from kodo.workflow.engine import Engine
from kodo.workflow.execution import TERMINAL
from kodo.workflow.registry import WorkflowDef


@dataclass(frozen=True)
class Started:
    workflow_id: str
    created: bool


class Client:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.db = engine.db

    def start(
        self,
        wf: WorkflowDef[Any, Any] | str,
        *args: Any,
        workflow_id: str | None = None,
        queue: str | None = None,
        partition_key: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        app_version: str | None = None,
        max_recovery_attempts: int | None = None,
        timeout_ms: int | None = None,
        **kwargs: Any,
    ) -> Started:
        """Start `wf` under `workflow_id` (idempotent: an existing id is returned, never re-run)."""
        wid = workflow_id or str(uuid.uuid4())
        with self.db.conn() as c:  # autocommit: the INSERT is its own transaction, one round trip
            started = self.start_txn(
                c,
                wf,
                args,
                kwargs,
                workflow_id=wid,
                queue=queue,
                partition_key=partition_key,
                priority=priority,
                deduplication_id=deduplication_id,
                app_version=app_version,
                max_recovery_attempts=max_recovery_attempts,
                timeout_ms=timeout_ms,
                savepoint=False,
            )
        if started.created:
            self.engine.publish(wid, self._queue_of(wf, queue))
        return started

    def start_txn(
        self,
        c: Conn,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        savepoint: bool = True,
        **options: Any,
    ) -> Started:
        """Insert the workflow row in the caller's transaction (with its product rows).

        The caller publishes after commit (`publish_started`). The savepoint keeps a dedup clash from
        poisoning the caller's transaction; an autocommit caller (`start`) needs none.
        """
        try:
            with c.transaction() if savepoint else contextlib.nullcontext():
                created = self.engine.insert_workflow(c, wf, args, kwargs, workflow_id=workflow_id, **options)
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(
                f"deduplication id {options.get('deduplication_id')!r} is in use on this queue",
                workflow_id=workflow_id,
            ) from exc
        return Started(workflow_id, created)

    def publish_started(
        self, started: Started, wf: WorkflowDef[Any, Any] | str, queue: str | None = None
    ) -> None:
        if started.created:
            self.engine.publish(started.workflow_id, self._queue_of(wf, queue))

    def _queue_of(self, wf: WorkflowDef[Any, Any] | str, queue: str | None) -> str:
        if queue:
            return queue
        return (self.engine.registry.get(wf) if isinstance(wf, str) else wf).queue

    def send(
        self, destination: str, message: Any, topic: str = DEFAULT_TOPIC, idempotency_key: str | None = None
    ) -> bool:
        """Durable message to `destination`; wakes it if it waits on `topic`. False if a duplicate key."""
        now = clock.now_ms()
        with self.db.tx() as c:
            # Lock the receiver first, so a receiver about to park sees this message or is woken.
            if c.execute(Q["lock_workflow"], {"workflow_uuid": destination}).fetchone() is None:
                raise NotFoundError(f"workflow not found: {destination}", workflow_id=destination)
            inserted = c.execute(
                Q["insert_notification"],
                {
                    "message_uuid": idempotency_key or str(uuid.uuid4()),
                    "destination": destination,
                    "topic": topic,
                    "message": serde.dumps(message),
                    "now": now,
                },
            ).fetchone()
            woken = c.execute(
                Q["wake_receiver"], {"destination": destination, "reason": f"recv:{topic}", "now": now}
            ).fetchone()
        if woken is not None:
            self.engine.publish(woken["workflow_uuid"], woken["queue_name"])
        return inserted is not None

    def cancel(self, workflow_id: str) -> None:
        """ENQUEUED/PENDING -> CANCELLED; the runner stops at its next step boundary.

        A cancelled child is finished as far as its parent is concerned: a parent waiting on it (or
        on all its children) is woken, as a completing child would wake it.
        """
        now = clock.now_ms()
        woken: dict[str, Any] | None = None
        with self.db.tx() as c:
            row = c.execute(Q["get_workflow"], {"workflow_uuid": workflow_id}).fetchone()
            parent = row["parent_workflow_id"] if row is not None else None
            if parent is not None:
                # Parent first, the same lock order as a completing child (Engine._complete).
                c.execute(Q["lock_workflow"], {"workflow_uuid": parent})
            done = c.execute(Q["cancel_workflow"], {"workflow_uuid": workflow_id, "now": now}).fetchone()
            if done is not None and row is not None:
                self._on_cancel(c, row)
            if done is not None and parent is not None:
                woken = c.execute(
                    Q["wake_parent"], {"parent": parent, "child": workflow_id, "now": now}
                ).fetchone()
        if done is None:
            self._conflict("cancel", workflow_id)
        if woken is not None:
            self.engine.publish(woken["workflow_uuid"], woken["queue_name"])

    def _on_cancel(self, c: Conn, row: dict[str, Any]) -> None:
        try:
            hook = self.engine.registry.get(row["name"]).on_cancel
        except UnknownWorkflowError:
            return  # a workflow this process does not know has no hook here
        if hook is not None:
            args, kwargs = serde.decode_inputs(row["inputs"])
            hook(c, *args, **kwargs)

    def resume(self, workflow_id: str) -> None:
        """CANCELLED/ENQUEUED/MAX_RECOVERY_ATTEMPTS_EXCEEDED -> runs again under the same id."""
        with self.db.conn() as c:
            row = c.execute(
                Q["resume_workflow"], {"workflow_uuid": workflow_id, "now": clock.now_ms()}
            ).fetchone()
        if row is None:
            self._conflict("resume", workflow_id)
        self.engine.publish(workflow_id, row["queue_name"])

    def fork(
        self,
        workflow_id: str,
        start_step: int,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> str:
        """New workflow that reuses the recorded outputs of operations before `start_step`."""
        if start_step < 1:
            raise ConflictError(f"fork stepN {start_step} must be >= 1", workflow_id=workflow_id)
        new_id = new_workflow_id or str(uuid.uuid4())
        with self.db.tx() as c:
            orig = c.execute(Q["get_workflow"], {"workflow_uuid": workflow_id}).fetchone()
            if orig is None:
                raise NotFoundError(f"workflow not found: {workflow_id}", workflow_id=workflow_id)
            max_id = int(c.execute(Q["max_function_id"], {"workflow_uuid": workflow_id}).fetchone()["max_id"])  # type: ignore[index]
            if start_step > max_id:
                raise ConflictError(
                    f"fork stepN {start_step} exceeds max step {max_id}", workflow_id=workflow_id
                )
            args, kwargs = serde.decode_inputs(orig["inputs"])
            created = self.engine.insert_workflow(
                c,
                orig["name"],
                tuple(args),
                kwargs,
                workflow_id=new_id,
                queue=orig["queue_name"],
                partition_key=orig["queue_partition_key"],
                priority=orig["priority"],
                app_version=app_version or self.engine.settings.app_version,
                max_recovery_attempts=orig["max_recovery_attempts"],
                forked_from=workflow_id,
            )
            if not created:
                raise ConflictError(f"workflow {new_id} already exists", workflow_id=new_id)
            c.execute(
                Q["fork_copy_outputs"],
                {"new_workflow_uuid": new_id, "workflow_uuid": workflow_id, "start_step": start_step},
            )
        self.engine.publish(new_id, orig["queue_name"])
        return new_id

    def _conflict(self, verb: str, workflow_id: str) -> NoReturn:
        row = self.get(workflow_id)
        raise ConflictError(f"cannot {verb} workflow in status {row['status']}", workflow_id=workflow_id)

    def get(self, workflow_id: str) -> dict[str, Any]:
        with self.db.conn() as c:
            row = c.execute(Q["get_workflow"], {"workflow_uuid": workflow_id}).fetchone()
        if row is None:
            raise NotFoundError(f"workflow not found: {workflow_id}", workflow_id=workflow_id)
        return row

    def steps(self, workflow_id: str) -> list[dict[str, Any]]:
        self.get(workflow_id)
        with self.db.conn() as c:
            return c.execute(Q["list_steps"], {"workflow_uuid": workflow_id}).fetchall()

    def wait(self, workflow_id: str, timeout_s: float = 30.0, poll_s: float = 0.02) -> dict[str, Any]:
        """Poll until the workflow is terminal; returns its row. Raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.get(workflow_id)
            if row["status"] in TERMINAL:
                return row
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workflow_id} still {row['status']} after {timeout_s}s")
            time.sleep(poll_s)
