"""The engine: claim a workflow (fenced lease), run its body with replay, write its outcome.

`Engine.execute(workflow_id)` is all a Celery task calls. Any delivery may be a duplicate: a
delivery that cannot claim is a counted no-op (`noop_deliveries`), never a second runner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from kodo import clock
from kodo.config import Settings
from kodo.db.pool import Conn, Database
from kodo.db.queries import Q
from kodo.dispatch import Dispatcher
from kodo.errors import Cancelled, KodoError, Parked, Preempted
from kodo.workflow import context, executor, serde
from kodo.workflow.execution import Execution
from kodo.workflow.registry import REGISTRY, Registry, WorkflowDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: success | error | parked | cancelled | preempted | noop | exceeded."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind


class Engine:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        dispatcher: Dispatcher,
        registry: Registry = REGISTRY,
    ) -> None:
        self.settings = settings
        self.db = db
        self.dispatcher = dispatcher
        self.registry = registry
        self.heartbeat = executor.Heartbeat(db, settings.lease_ms, settings.heartbeat_ms)

    @property
    def executor_id(self) -> str:
        return executor.executor_id()

    # ---- starting and publishing -------------------------------------------------------------

    def insert_workflow(
        self,
        c: Conn,
        wf: WorkflowDef[Any, Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_id: str,
        queue: str | None = None,
        partition_key: str | None = None,
        parent: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        app_version: str | None = None,
        max_recovery_attempts: int | None = None,
        forked_from: str | None = None,
        timeout_ms: int | None = None,
    ) -> bool:
        """Insert the workflow row inside the caller's transaction. False if the id already exists."""
        definition = self.registry.get(wf) if isinstance(wf, str) else wf
        row = c.execute(
            Q["insert_workflow"],
            {
                "workflow_uuid": workflow_id,
                "name": definition.name,
                "queue_name": queue or definition.queue,
                "partition_key": partition_key,
                "priority": priority,
                "deduplication_id": deduplication_id,
                "app_version": app_version or self.settings.app_version,
                "inputs": serde.encode_inputs(args, kwargs),
                "parent": parent,
                "forked_from": forked_from,
                "max_recovery_attempts": (
                    definition.max_recovery_attempts
                    if max_recovery_attempts is None
                    else max_recovery_attempts
                ),
                "timeout_ms": timeout_ms,
                "now": clock.now_ms(),
            },
        ).fetchone()
        return row is not None

    def publish(self, workflow_id: str, queue: str) -> None:
        """Ring the doorbell. A failed publish is not lost work: the reconciler republishes the row."""
        try:
            self.dispatcher.publish(workflow_id, queue)
        except Exception:
            log.warning(
                "publish of %s to %s failed; the reconciler will retry", workflow_id, queue, exc_info=True
            )

    # ---- executing ---------------------------------------------------------------------------

    def _claim(self, c: Conn, workflow_id: str) -> dict[str, Any] | None:
        now = clock.now_ms()
        params = {
            "workflow_uuid": workflow_id,
            "executor_id": self.executor_id,
            "app_version": self.settings.app_version,
            "now": now,
            "lease_until": now + self.settings.lease_ms,
        }
        row = c.execute(Q["claim_workflow"], params).fetchone()
        if row is not None:
            return row
        why = c.execute(
            Q["count_noop_delivery"], {"workflow_uuid": workflow_id, "app_version": self.settings.app_version}
        ).fetchone()
        if why is None or not executor.is_local_and_dead(why["executor_id"]):
            log.info("no-op delivery of %s: %s", workflow_id, _noop_reason(why))
            return None
        # The holder was a process on this host that died (kill -9): take over now rather than
        # after the lease runs out. The takeover counts a recovery attempt in claim_workflow.
        c.execute(
            Q["expire_lease"],
            {
                "workflow_uuid": workflow_id,
                "executor_id": why["executor_id"],
                "epoch": why["lease_epoch"],
                "now": now,
            },
        )
        return c.execute(Q["claim_workflow"], params).fetchone()

    def execute(self, workflow_id: str) -> Outcome:
        """Run one delivery of `workflow_id` to its end, its next wait, or a no-op."""
        with self.db.conn() as c:  # held for the whole delivery: one pool checkout
            return self._execute(c, workflow_id)

    def _execute(self, c: Conn, workflow_id: str) -> Outcome:
        row = self._claim(c, workflow_id)
        if row is None:
            return Outcome("noop")
        if row["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
            log.warning("%s exceeded its recovery attempts (%s)", workflow_id, row["recovery_attempts"])
            if row["parent_workflow_id"] is not None:
                # Terminal now: a parent waiting on this child must not wait forever.
                self._wake_parent(row["parent_workflow_id"], workflow_id)
            return Outcome("exceeded")
        ex = Execution(
            self, workflow_id, int(row["lease_epoch"]), row["recorded"], row["parent_workflow_id"], conn=c
        )
        self.heartbeat.hold()
        token = context._current.set(ex)
        try:
            return self._run_body(ex, row)
        finally:
            context._current.reset(token)
            self.heartbeat.release()

    def _run_body(self, ex: Execution, row: dict[str, Any]) -> Outcome:
        try:
            wf = self.registry.get(row["name"])
            args, kwargs = serde.decode_inputs(row["inputs"])
            result = wf.fn(*args, **kwargs)
            output = serde.dumps(result)
        except Parked:
            return Outcome("parked")
        except Cancelled:
            self._release(ex)
            return Outcome("cancelled")
        except Preempted:
            log.info("%s: lease epoch %s is stale; stopped without writing", ex.workflow_id, ex.epoch)
            return Outcome("preempted")
        except psycopg.OperationalError:
            raise  # the database is unreachable: the lease lapses and the run is recovered later
        except Exception as exc:
            if not isinstance(exc, KodoError):
                log.info("%s failed: %r", ex.workflow_id, exc)
            return self._complete(ex, "ERROR", None, serde.encode_error(exc))
        return self._complete(ex, "SUCCESS", output, None)

    def _wake_parent(self, parent: str, child: str) -> None:
        """Wake `parent` if it waits on `child` (already terminal, committed) or on its last child."""
        with self.db.tx() as c:
            c.execute(Q["lock_workflow"], {"workflow_uuid": parent})
            woken = c.execute(
                Q["wake_parent"], {"parent": parent, "child": child, "now": clock.now_ms()}
            ).fetchone()
        if woken is not None:
            self.publish(woken["workflow_uuid"], woken["queue_name"])

    def _release(self, ex: Execution) -> bool:
        """Give the lease back (fenced). False if it was no longer ours."""
        with ex._conn() as c:
            row = c.execute(
                Q["release_lease"],
                {
                    "workflow_uuid": ex.workflow_id,
                    "epoch": ex.epoch,
                    "executor_id": ex.executor_id,
                    "now": clock.now_ms(),
                },
            ).fetchone()
        return row is not None

    def _complete(self, ex: Execution, status: str, output: str | None, error: str | None) -> Outcome:
        params = {
            "workflow_uuid": ex.workflow_id,
            "epoch": ex.epoch,
            "executor_id": ex.executor_id,
            "status": status,
            "output": output,
            "error": error,
            "now": clock.now_ms(),
        }
        woken: dict[str, Any] | None = None
        if ex.parent is None:
            with ex._conn() as c:  # one statement, its own transaction
                done = c.execute(Q["complete_workflow"], params).fetchone()
        else:
            with ex._tx() as c:
                # Lock the parent first: it may be parking on its children right now (see wake_parent).
                c.execute(Q["lock_workflow"], {"workflow_uuid": ex.parent})
                done = c.execute(Q["complete_workflow"], params).fetchone()
                if done is not None:
                    woken = c.execute(
                        Q["wake_parent"], {"parent": ex.parent, "child": ex.workflow_id, "now": params["now"]}
                    ).fetchone()
        if done is None:
            # Cancelled under us (the lease is still ours: give it back), or our lease was taken
            # (preempted: nothing of ours may be written).
            return Outcome("cancelled" if self._release(ex) else "preempted")
        if woken is not None:
            self.publish(woken["workflow_uuid"], woken["queue_name"])
        return Outcome("success" if status == "SUCCESS" else "error")


def _noop_reason(why: dict[str, Any] | None) -> str:
    if why is None:
        return "unknown workflow id"
    if why["status"] not in ("ENQUEUED", "PENDING"):
        return f"status {why['status']}"
    if why["wait_reason"]:
        return f"waiting on {why['wait_reason']}"
    if why["executor_id"]:
        return f"leased by {why['executor_id']}"
    return f"application version {why['application_version']}"
