"""One claimed run of one workflow: replay of recorded operations, fenced checkpoints, waits.

Every operation a workflow body performs (step, transaction, sleep, recv, send, child start, child
wait) takes the next `function_id`. If that id is recorded, the recorded result is returned (or its
error raised) without running anything; a different name at a recorded id is a NonDeterminismError.
Otherwise the operation runs and its result is written with `record_step`, which is fenced by the
lease epoch: a zombie or duplicate runner writes nothing and is told so (Preempted).

Waits (sleep, recv, child results) release the lease and unwind the body with `Parked`; the waker
republishes the workflow and the body replays from the top.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from kodo import clock, faults
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import (
    Cancelled,
    ChildWorkflowError,
    NonDeterminismError,
    Parked,
    Preempted,
    StepRetriesExceededError,
)
from kodo.workflow import serde
from kodo.workflow.registry import RetryPolicy, WorkflowDef

if TYPE_CHECKING:
    from kodo.workflow.engine import Engine

TERMINAL = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


@dataclass(frozen=True)
class Recorded:
    function_id: int
    function_name: str
    output: str | None
    error: str | None
    child_workflow_id: str | None

    def value(self) -> Any:
        if self.error is not None:
            raise serde.decode_error(self.error)
        return serde.loads(self.output)


class Execution:
    """The state of one claimed run; lives in a contextvar while the workflow body runs."""

    def __init__(
        self,
        engine: Engine,
        workflow_id: str,
        epoch: int,
        recorded: list[dict[str, Any]],
        parent: str | None,
        conn: Conn | None = None,
    ) -> None:
        self.engine = engine
        self.conn = conn
        self.workflow_id = workflow_id
        self.epoch = epoch
        self.parent = parent
        self.executor_id = engine.executor_id
        self.recorded = {int(r["function_id"]): Recorded(**r) for r in recorded}
        self._next_id = 0
        self.step_attempt = 0
        # The status this run last read from its own row (the claim just set PENDING). Every
        # checkpoint returns the row's status, so a boundary right after one needs no extra query.
        self._status = "PENDING"
        self._status_at = time.monotonic()

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        """The connection this run holds from claim to end (one pool checkout per delivery)."""
        if self.conn is None:
            with self.engine.db.conn() as c:
                yield c
        else:
            yield self.conn

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        with self._conn() as c, c.transaction():
            yield c

    def _observe(self, status: str) -> None:
        self._status, self._status_at = status, time.monotonic()

    # ---- bookkeeping -------------------------------------------------------------------------

    def _fence(self) -> dict[str, Any]:
        return {"workflow_uuid": self.workflow_id, "epoch": self.epoch, "executor_id": self.executor_id}

    def _take_id(self, name: str) -> tuple[int, Recorded | None]:
        self._next_id += 1
        fid = self._next_id
        rec = self.recorded.get(fid)
        if rec is not None and rec.function_name != name:
            raise NonDeterminismError(
                f"workflow {self.workflow_id} function_id {fid}: recorded {rec.function_name!r}, "
                f"replay called {name!r}",
                workflow_id=self.workflow_id,
                function_id=fid,
            )
        return fid, rec

    def boundary(self) -> None:
        """The step-boundary check: stop if cancelled, or if our lease was taken over.

        A status read less than `boundary_fresh_ms` ago (normally the previous checkpoint's) is
        used as is. That read also renewed our lease for `lease_ms`, so no takeover can have
        happened since; only a cancel can, and it is seen at the next boundary after that window.
        """
        fresh_s = self.engine.settings.boundary_fresh_ms / 1000
        if self._status == "PENDING" and time.monotonic() - self._status_at < fresh_s:
            return
        with self._conn() as c:
            row = c.execute(Q["check_boundary"], {"workflow_uuid": self.workflow_id}).fetchone()
        if row is None or row["lease_epoch"] != self.epoch or row["executor_id"] != self.executor_id:
            raise Preempted(self.workflow_id)
        self._observe(row["status"])
        if row["status"] == "CANCELLED":
            raise Cancelled(self.workflow_id)
        if row["status"] != "PENDING":
            raise Preempted(self.workflow_id)

    def _record(
        self,
        c: Conn,
        fid: int,
        name: str,
        *,
        output: str | None,
        error: str | None,
        started_at: int,
        child: str | None = None,
    ) -> Recorded:
        """Write one checkpoint (fenced). Returns what is recorded at `fid` afterwards."""
        now = clock.now_ms()
        row = c.execute(
            Q["record_step"],
            {
                **self._fence(),
                "function_id": fid,
                "function_name": name,
                "output": output,
                "error": error,
                "child_workflow_id": child,
                "started_at": started_at,
                "now": now,
                "lease_until": now + self.engine.settings.lease_ms,
            },
        ).fetchone()
        if row is None or row["status"] is None:
            raise Preempted(self.workflow_id)
        self._observe(row["status"])
        if row["inserted"] == 0:
            # Someone recorded this id first (a forked copy or an earlier runner): theirs stands.
            got = c.execute(Q["get_step"], {"workflow_uuid": self.workflow_id, "function_id": fid}).fetchone()
            assert got is not None
            return Recorded(**got)
        return Recorded(fid, name, output, error, child)

    def _lock_own(self, c: Conn) -> None:
        row = c.execute(Q["lock_own"], self._fence()).fetchone()
        if row is None:
            raise Preempted(self.workflow_id)
        self._observe(row["status"])

    def _park(self, c: Conn, reason: str, wake_at: int | None) -> None:
        now = clock.now_ms()
        if (
            c.execute(
                Q["park_workflow"], {**self._fence(), "reason": reason, "wake_at": wake_at, "now": now}
            ).fetchone()
            is None
        ):
            # Not parked: either cancelled while we still hold the lease (stop as cancelled, so the
            # engine gives the lease back and a resume can run at once), or no longer ours at all.
            row = c.execute(Q["check_boundary"], {"workflow_uuid": self.workflow_id}).fetchone()
            if (
                row is not None
                and row["status"] == "CANCELLED"
                and row["lease_epoch"] == self.epoch
                and row["executor_id"] == self.executor_id
            ):
                raise Cancelled(self.workflow_id)
            raise Preempted(self.workflow_id)
        if wake_at is not None:
            c.execute(Q["notify_timer"], {"wake_at": wake_at})

    # ---- steps -------------------------------------------------------------------------------

    def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: RetryPolicy | None,
    ) -> Any:
        fid, rec = self._take_id(name)
        if rec is not None:
            return rec.value()
        started = clock.now_ms()
        attempt = 1
        while True:
            self.boundary()
            self.step_attempt = attempt
            faults.reached(faults.STEP_STARTED, name)
            try:
                result = fn(*args, **kwargs)
                output, error, raised = serde.dumps(result), None, None
                break
            except Exception as exc:
                retryable = retry is not None and retry.retry_if(exc)
                if retry is not None and retryable and attempt < retry.max_attempts:
                    attempt += 1
                    time.sleep(retry.delay_before(attempt))
                    continue
                if retry is not None and retryable:
                    exc = StepRetriesExceededError(
                        f"Step {name} has exceeded its maximum of {retry.max_attempts} retries. "
                        f"Previous error: {exc}"
                    )
                output, error, raised = None, serde.encode_error(exc), exc
                break
        with self._conn() as c:
            stored = self._record(c, fid, name, output=output, error=error, started_at=started)
        faults.reached(faults.STEP_COMMITTED, name)
        if stored.output != output or stored.error != error:
            return stored.value()
        if raised is not None:
            raise raised
        return result

    def run_transaction(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fid, rec = self._take_id(name)
        if rec is not None:
            return rec.value()
        started = clock.now_ms()
        self.boundary()
        self.step_attempt = 1
        faults.reached(faults.STEP_STARTED, name)
        raised: Exception | None = None
        try:
            with self._tx() as c:
                result = fn(c, *args, **kwargs)
                output = serde.dumps(result)
                # If the fence fails this raises Preempted and the product writes roll back with it.
                self._record(c, fid, name, output=output, error=None, started_at=started)
        except psycopg.OperationalError:
            raise  # infrastructure, not a step failure: the lease expires and the run is recovered
        except Exception as exc:
            raised = exc
            with self._conn() as c:
                stored = self._record(
                    c, fid, name, output=None, error=serde.encode_error(exc), started_at=started
                )
            if stored.error is None:
                return stored.value()
        faults.reached(faults.STEP_COMMITTED, name)
        if raised is not None:
            raise raised
        return result

    # ---- durable waits -----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        fid, rec = self._take_id("kodo.sleep")
        if rec is not None:
            wake_at = int(rec.value()["wake_at"])
        else:
            now = clock.now_ms()
            wake_at = now + max(int(seconds * 1000), 0)
            with self._tx() as c:
                self._record(
                    c, fid, "kodo.sleep", output=serde.dumps({"wake_at": wake_at}), error=None, started_at=now
                )
                if wake_at > now:
                    self._park(c, "sleep", wake_at)
            if wake_at <= now:
                return
            faults.reached(faults.WORKFLOW_PARKED, "kodo.sleep")
            raise Parked(self.workflow_id)
        if clock.now_ms() >= wake_at:
            return
        with self._tx() as c:
            self._park(c, "sleep", wake_at)
        raise Parked(self.workflow_id)

    def recv(self, topic: str, timeout_s: float) -> Any:
        dfid, drec = self._take_id("kodo.recv.deadline")
        fid, rec = self._take_id("kodo.recv")
        if rec is not None:
            return rec.value()
        now = clock.now_ms()
        with self._tx() as c:
            self._lock_own(c)
            if drec is None:
                deadline = now + max(int(timeout_s * 1000), 0)
                self._record(
                    c,
                    dfid,
                    "kodo.recv.deadline",
                    output=serde.dumps({"deadline": deadline}),
                    error=None,
                    started_at=now,
                )
            else:
                deadline = int(drec.value()["deadline"])
            msg = c.execute(
                Q["take_message"],
                {"workflow_uuid": self.workflow_id, "topic": topic, "now": now, "function_id": fid},
            ).fetchone()
            if msg is not None or now >= deadline:
                out = msg["message"] if msg is not None else serde.dumps(None)
                self._record(c, fid, "kodo.recv", output=out, error=None, started_at=now)
                return serde.loads(out)
            self._park(c, f"recv:{topic}", deadline)
        raise Parked(self.workflow_id)

    def send(self, destination: str, message: Any, topic: str) -> None:
        fid, rec = self._take_id("kodo.send")
        if rec is not None:
            return
        now = clock.now_ms()
        woken: dict[str, Any] | None = None
        with self._tx() as c:
            # Lock both rows in id order so two workflows messaging each other cannot deadlock.
            for wid in sorted({self.workflow_id, destination}):
                if wid == self.workflow_id:
                    self._lock_own(c)
                elif c.execute(Q["lock_workflow"], {"workflow_uuid": wid}).fetchone() is None:
                    raise ChildWorkflowError(f"send: no workflow {destination}", workflow_id=destination)
            c.execute(
                Q["insert_notification"],
                {
                    "message_uuid": f"{self.workflow_id}:{fid}",
                    "destination": destination,
                    "topic": topic,
                    "message": serde.dumps(message),
                    "now": now,
                },
            )
            woken = c.execute(
                Q["wake_receiver"], {"destination": destination, "reason": f"recv:{topic}", "now": now}
            ).fetchone()
            self._record(c, fid, "kodo.send", output=serde.dumps(None), error=None, started_at=now)
        if woken is not None:
            self.engine.publish(woken["workflow_uuid"], woken["queue_name"])

    # ---- children ----------------------------------------------------------------------------

    def start_child(
        self,
        wf: WorkflowDef[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        queue: str | None,
        partition_key: str | None,
    ) -> str:
        fid, rec = self._take_id("kodo.start_child")
        if rec is not None:
            assert rec.child_workflow_id is not None
            return rec.child_workflow_id
        child_id = workflow_id or f"{self.workflow_id}-{fid}"
        now = clock.now_ms()
        with self._tx() as c:
            created = self.engine.insert_workflow(
                c,
                wf,
                args,
                kwargs,
                workflow_id=child_id,
                queue=queue,
                partition_key=partition_key,
                parent=self.workflow_id,
            )
            self._record(
                c,
                fid,
                "kodo.start_child",
                output=serde.dumps(child_id),
                error=None,
                started_at=now,
                child=child_id,
            )
        if created:
            self.engine.publish(child_id, queue or wf.queue)
        return child_id

    def get_result(self, child_id: str) -> Any:
        fid, rec = self._take_id("kodo.get_result")
        if rec is not None:
            return rec.value()
        now = clock.now_ms()
        with self._tx() as c:
            self._lock_own(c)
            child = c.execute(Q["get_workflow"], {"workflow_uuid": child_id}).fetchone()
            if child is None:
                raise ChildWorkflowError(f"no child workflow {child_id}", workflow_id=child_id)
            if child["status"] in TERMINAL:
                output, error = _child_outcome(child)
                stored = self._record(
                    c, fid, "kodo.get_result", output=output, error=error, started_at=now, child=child_id
                )
            else:
                self._park(c, f"child:{child_id}", None)
                stored = None
        if stored is None:
            raise Parked(self.workflow_id)
        return stored.value()

    def wait_children(self) -> list[dict[str, Any]]:
        fid, rec = self._take_id("kodo.wait_children")
        if rec is not None:
            return list(rec.value())
        now = clock.now_ms()
        with self._tx() as c:
            self._lock_own(c)
            rows = c.execute(Q["child_states"], {"parent": self.workflow_id}).fetchall()
            if all(r["status"] in TERMINAL for r in rows):
                summary = [
                    {
                        "workflow_id": r["workflow_uuid"],
                        "status": r["status"],
                        "output": serde.loads(r["output"]),
                        "error": serde.error_message(r["error"]),
                    }
                    for r in sorted(rows, key=lambda r: str(r["workflow_uuid"]))
                ]
                stored = self._record(
                    c, fid, "kodo.wait_children", output=serde.dumps(summary), error=None, started_at=now
                )
            else:
                self._park(c, "children", None)
                stored = None
        if stored is None:
            raise Parked(self.workflow_id)
        return list(stored.value())


def _child_outcome(child: dict[str, Any]) -> tuple[str | None, str | None]:
    status = child["status"]
    if status == "SUCCESS":
        return child["output"], None
    if status == "ERROR" and child["error"] is not None:
        return None, child["error"]
    exc = ChildWorkflowError(f"child workflow {child['workflow_uuid']} ended {status}")
    return None, serde.encode_error(exc)
