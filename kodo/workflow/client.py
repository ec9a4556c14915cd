"""Operations on workflows from outside a workflow body: start, send, cancel, resume, fork, read.

Every write is one transaction, and publishing happens after it commits (`Publisher`). A crash
between the two loses nothing: the row is ENQUEUED (or woken) and the reconciler republishes it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from kodo import clock
from kodo.errors import ConflictError, NotFoundError
from kodo.records import Doorbell, DuplicateError, Row
from kodo.states import TERMINAL, Transition
from kodo.workflow import serde, transitions
from kodo.workflow.context import DEFAULT_TOPIC
from kodo.workflow.engine import Engine
from kodo.workflow.ports import Session
from kodo.workflow.registry import WorkflowDef

# Extra writes of an operator action, made in the action's transaction: (product connection, forked id).
Audit = Callable[[Any, str | None], None]


@dataclass(frozen=True)
class Started:
    workflow_id: str
    created: bool
    # What to ring once the row is committed (after admission, for `start_txn`: maybe nothing yet).
    doorbells: tuple[Doorbell, ...] = field(default=(), compare=False, repr=False)


class Client:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.publisher = engine.publisher

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
        # The INSERT is its own transaction (one round trip); a limited queue's row is admitted by
        # it when it can be at once, else admission follows in a statement of its own.
        with self.store.session() as s, self.publisher.commit_then_publish(s, atomic=False) as bells:
            started = self._insert(
                s,
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
            )
            bells.add(*started.doorbells)
        return started

    def start_txn(
        self,
        conn: Any,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        **options: Any,
    ) -> Started:
        """Insert the workflow row in the caller's transaction on `conn` (with its product rows).

        Admission runs in that transaction too; the caller publishes what it admitted after commit
        (`publish_started`). A deduplication clash raises ConflictError and leaves the caller's
        transaction usable.
        """
        session = self.store.bind(conn)
        started = self._insert(session, wf, args, kwargs, workflow_id=workflow_id, **options)
        admitted = self.publisher.admission.admit(session, list(started.doorbells), ())
        return replace(started, doorbells=tuple(admitted))

    def _insert(
        self,
        session: Session,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        **options: Any,
    ) -> Started:
        new = self.engine.new_workflow(wf, args, kwargs, workflow_id=workflow_id, **options)
        try:
            bell = self.publisher.admission.insert(session, new, clock.now_ms())
        except DuplicateError as exc:
            raise ConflictError(f"deduplication id {new.deduplication_id!r} is in use on this queue") from exc
        return Started(workflow_id, bell is not None, () if bell is None else (bell,))

    def publish_started(self, started: Started) -> None:
        """Publish a workflow `start_txn` created, once the caller's transaction committed."""
        self.publisher.ring(started.doorbells)

    def send(
        self, destination: str, message: Any, topic: str = DEFAULT_TOPIC, idempotency_key: str | None = None
    ) -> bool:
        """Durable message to `destination`; wakes it if it waits on `topic`. False if a duplicate key."""
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            return transitions.send_message(
                s,
                bells,
                destination=destination,
                topic=topic,
                message_uuid=idempotency_key or str(uuid.uuid4()),
                message=serde.dumps(message),
                now=clock.now_ms(),
            )

    def admit(self, queue: str) -> None:
        """Admit now what `queue`'s limits allow (after they changed here; every reconciler's sweep
        does it within its interval anyway)."""
        self.publisher.admission.forget()
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            bells.free(queue)

    def cancel(self, workflow_id: str, *, audit: Audit | None = None) -> None:
        """ENQUEUED/PENDING -> CANCELLED; the runner stops at its next step boundary.

        The workflow's product hook runs in the same transaction (a workflow this process does not
        know fails the cancel: its hook is never skipped), and so does `audit(conn, None)`. A
        cancelled child is finished as far as its parent is concerned: a parent waiting on it (or
        on all its children) is woken.
        """
        now = clock.now_ms()
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            row = s.get_workflow(workflow_id)
            if row is None:
                raise NotFoundError(f"workflow not found: {workflow_id}")
            hook = self.engine.definition(row["name"]).on_transition
            done = transitions.end_child(
                s,
                bells,
                parent=row["parent_workflow_id"],
                child=workflow_id,
                now=now,
                transition=lambda: s.cancel(workflow_id, now),
            )
            if done:
                bells.free(row["queue_name"])
                self._run_hook(s, hook, Transition.CANCELLED, row)
                if audit is not None:
                    audit(s.handle, None)
        if not done:
            self._conflict("cancel", workflow_id)

    def resume(self, workflow_id: str, *, audit: Audit | None = None) -> None:
        """CANCELLED/ENQUEUED/MAX_RECOVERY_ATTEMPTS_EXCEEDED -> runs again under the same id.

        The product hook and `audit(conn, None)` run in the same transaction."""
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            row = s.get_workflow(workflow_id)
            hook = self.engine.definition(row["name"]).on_transition if row is not None else None
            bell = s.resume(workflow_id, clock.now_ms())
            bells.add(bell)
            if bell is not None and row is not None:
                self._run_hook(s, hook, Transition.RESUMED, row)
                if audit is not None:
                    audit(s.handle, None)
        if bell is None:
            self._conflict("resume", workflow_id)

    @staticmethod
    def _run_hook(session: Session, hook: Any, transition: Transition, row: Row) -> None:
        if hook is not None:
            args, kwargs = serde.decode_inputs(row["inputs"])
            hook(session.handle, transition, None, *args, **kwargs)

    def fork(
        self,
        workflow_id: str,
        start_step: int,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
        audit: Audit | None = None,
    ) -> str:
        """New workflow that reuses the recorded outputs of operations before `start_step` (function
        ids count from 1). `audit(conn, new_id)` runs in the same transaction."""
        if start_step < 1:
            raise ConflictError(f"fork stepN {start_step} must be >= 1")
        new_id = new_workflow_id or str(uuid.uuid4())
        with self.store.session() as s, self.publisher.commit_then_publish(s) as bells:
            orig = s.get_workflow(workflow_id)
            if orig is None:
                raise NotFoundError(f"workflow not found: {workflow_id}")
            max_id = s.max_function_id(workflow_id)
            if start_step > max_id:
                raise ConflictError(f"fork stepN {start_step} exceeds max step {max_id}")
            args, kwargs = serde.decode_inputs(orig["inputs"])
            new = self.engine.new_workflow(
                orig["name"],
                args,
                kwargs,
                workflow_id=new_id,
                queue=orig["queue_name"],
                partition_key=orig["queue_partition_key"],
                priority=orig["priority"],
                app_version=app_version or self.engine.settings.app_version,
                max_recovery_attempts=orig["max_recovery_attempts"],
                forked_from=workflow_id,
            )
            bell = self.publisher.admission.insert(s, new, clock.now_ms())
            if bell is None:
                raise ConflictError(f"workflow {new_id} already exists")
            s.fork_copy(new_id, workflow_id, start_step)
            if audit is not None:
                audit(s.handle, new_id)
            bells.add(bell)
        return new_id

    def _conflict(self, verb: str, workflow_id: str) -> NoReturn:
        row = self.get(workflow_id)
        raise ConflictError(f"cannot {verb} workflow in status {row['status']}")

    def get(self, workflow_id: str) -> Row:
        with self.store.session() as s:
            row = s.get_workflow(workflow_id)
        if row is None:
            raise NotFoundError(f"workflow not found: {workflow_id}")
        return row

    def steps(self, workflow_id: str) -> list[Row]:
        self.get(workflow_id)
        with self.store.session() as s:
            return s.list_steps(workflow_id)

    def wait(self, workflow_id: str, timeout_s: float = 30.0, poll_s: float = 0.02) -> Row:
        """Poll until the workflow is terminal; returns its row. Raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.get(workflow_id)
            if row["status"] in TERMINAL:
                return row
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workflow_id} still {row['status']} after {timeout_s}s")
            time.sleep(poll_s)
