"""One claimed run of one workflow: replay of recorded operations, fenced checkpoints, waits.

Every operation a workflow body performs (step, transaction, sleep, recv, send, child start, child
wait) runs through one template, `_operation`: it takes the next `function_id`, calls the hooks,
and either replays what is recorded at that id (a different name there is a NonDeterminismError) or
runs the primitive's body. Checkpoints are fenced by the lease epoch: a zombie or duplicate runner
writes nothing and is told so (Preempted).

Waits (sleep, recv, child results, a retrying step's backoff) release the lease and unwind the body
with `Parked`; the waker republishes the workflow and the body replays from the top.

**Batched commits.** The transactions of consecutive operations of one delivery share one database
transaction, the batch, without savepoints. The batch commits, and rings what it collected, before
anything leaves the database (a `@step`'s function, unless it is declared `pure`: then it runs, and
its record commits, in the batch; a `send`; a `@transaction` declared `batch=False`), after an operation that rings doorbells (child starts, `send`: their messages go out
at once, published under that operation's span), and when the delivery ends (done, parked,
cancelled, preempted). A checkpoint still commits atomically with its operation's writes, and
nothing an operation wrote is visible before its checkpoint: they become visible together. A kill
before the batch's commit loses all of it, and the next delivery runs those operations again from
the last commit, as it would run one uncommitted operation. An operation that fails in a batch after
others rolls the whole batch back, and the delivery runs its body again from its last commit, every
operation in a transaction of its own as before batching (`_Unbatch`: failures inside operations are
rare, and they only cost that re-run). A fault point that says an operation has committed
(`step.committed`, `workflow.parked`) commits the batch first when it is armed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from kodo import clock, faults
from kodo.errors import (
    Cancelled,
    ChildWorkflowError,
    KodoError,
    NonDeterminismError,
    Parked,
    Preempted,
    StepRetriesExceededError,
)
from kodo.records import Checkpoint, Claim, Fence, Recorded, Row
from kodo.states import TERMINAL, OpKind, OutcomeKind, Transition, Wait, WaitKind, WorkflowStatus
from kodo.workflow import context, serde, transitions
from kodo.workflow.operations import Op
from kodo.workflow.ports import Session
from kodo.workflow.publisher import Bells
from kodo.workflow.registry import RetryPolicy, WorkflowDef

if TYPE_CHECKING:
    from kodo.workflow.engine import Engine

T = TypeVar("T")
log = logging.getLogger(__name__)


def recorded_value(rec: Recorded) -> Any:
    """The recorded result of an operation (its recorded error is raised)."""
    if rec.error is not None:
        raise serde.decode_error(rec.error)
    return serde.loads(rec.output)


class _Unbatch(BaseException):  # a signal, like GeneratorExit, not an error
    """An operation failed in a batch after other operations: the batch is rolled back, and the body
    runs again unbatched. A BaseException, so no `except Exception` of an operation or a body takes it."""


def _replay_value(op: Op) -> Any:
    assert op.recorded is not None
    return recorded_value(op.recorded)


class Execution:
    """The state of one claimed run; lives in a contextvar while the workflow body runs."""

    def __init__(self, engine: Engine, session: Session, claim: Claim) -> None:
        self.engine = engine
        self.session = session
        self.name = claim.name
        self.definition: WorkflowDef[..., Any] | None = None  # looked up when the body runs
        self.workflow_id = claim.workflow_id
        self.fence = Fence(claim.workflow_id, claim.epoch, engine.executor_id)
        self.parent = claim.parent
        self.queue = claim.queue
        self.inputs = claim.inputs
        self.recorded = {r.function_id: r for r in claim.recorded}
        self.retried = claim.retried  # step attempts recorded before this delivery (none: no read)
        self._next_id = 0
        self.step_attempt = 0
        # The status this run last read from its own row (the claim just set PENDING). Every
        # checkpoint returns the row's status, so a boundary right after one needs no extra query.
        self._status = WorkflowStatus.PENDING
        self._status_at = time.monotonic()
        self._batching = True  # False once a batch failed: every operation commits on its own
        self._batch: ExitStack | None = None  # the open batch (see the module doc)
        self._bells = Bells()  # the open batch's doorbells
        self._batch_ops = 0  # operations in the open batch
        self._pending: list[Recorded] = []  # recorded in the open batch: replayed once it commits
        self._depth = 0  # operations' transactions open now (nested: a durable call in a @transaction)

    @property
    def epoch(self) -> int:
        return self.fence.epoch

    @contextmanager
    def _tx(self) -> Iterator[Bells]:
        """An operation's transaction: the batch, opened here if none is open (see the module doc).
        Nested in an operation's transaction (a savepoint of it) or unbatched: a block of its own."""
        publisher = self.engine.publisher
        if self._depth or not self._batching:
            self._depth += 1
            try:
                with publisher.commit_then_publish(self.session) as bells:
                    yield bells
            finally:
                self._depth -= 1
            return
        if self._batch is None:
            batch = ExitStack()
            self._bells = batch.enter_context(publisher.commit_then_publish(self.session))
            self._batch, self._batch_ops = batch, 0
        alone = self._batch_ops == 0
        self._batch_ops += 1
        self._depth += 1
        try:
            yield self._bells
        except BaseException as exc:
            self._abort(exc)
            if alone:
                raise  # the batch was this operation's own transaction: it rolled back, as ever
            raise _Unbatch(self.workflow_id) from exc
        finally:
            self._depth -= 1

    def flush(self) -> None:
        """Commit the open batch, then ring its doorbells. Nothing to do when none is open, or inside
        an operation's transaction (a durable call made in a `@transaction` step commits with it)."""
        if self._depth:
            return
        batch, self._batch = self._batch, None
        if batch is not None:
            pending, self._pending = self._pending, []
            batch.close()
            self.recorded.update((rec.function_id, rec) for rec in pending)

    def _abort(self, exc: BaseException) -> None:
        """Roll the open batch back (`exc` ends it; the caller raises it or what it stands for)."""
        batch, self._batch = self._batch, None
        self._pending = []
        if batch is not None:
            with contextlib.suppress(Exception):  # a broken connection: the rollback is moot
                batch.__exit__(type(exc), exc, exc.__traceback__)

    def _committed(self, point: str, name: str) -> None:
        """A fault point saying `name` has committed: true of the batch too once it is armed."""
        if faults.armed(point, name):
            self.flush()
        faults.reached(point, name)

    def _observe(self, status: WorkflowStatus) -> None:
        self._status, self._status_at = status, time.monotonic()

    # ---- running the body --------------------------------------------------------------------

    def run(self) -> OutcomeKind:
        """Run the workflow body to its end or its next wait; write the outcome (fenced), and commit
        the batch (an exception that ends the delivery rolls it back)."""
        token = context.enter(self)
        try:
            while True:
                try:
                    outcome = self._run()
                    break
                except _Unbatch as signal:
                    log.info("%s: %r in a batch; running again unbatched", self.workflow_id, signal.__cause__)
                    self._batching = False
                    self._next_id = self.step_attempt = 0
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            context.leave(token)
        self.flush()
        return outcome

    def _run(self) -> OutcomeKind:
        try:
            self.definition = self.engine.registry.get(self.name)
            args, kwargs = serde.decode_inputs(self.inputs)
            output = serde.dumps(self.definition.fn(*args, **kwargs))
        except Parked:
            return OutcomeKind.PARKED
        except Cancelled:
            self.release()
            return OutcomeKind.CANCELLED
        except Preempted:
            return OutcomeKind.PREEMPTED
        except Exception as exc:
            if self.engine.store_unavailable(exc):
                raise  # the database is unreachable: the lease lapses and the run is recovered
            if not isinstance(exc, KodoError):
                log.info("%s failed: %r", self.workflow_id, exc)
            return self.complete(WorkflowStatus.ERROR, None, serde.encode_error(exc), str(exc))
        return self.complete(WorkflowStatus.SUCCESS, output, None, None)

    def complete(
        self, status: WorkflowStatus, output: str | None, error: str | None, detail: str | None
    ) -> OutcomeKind:
        """The terminal write, with the parent woken and the product hook run in its transaction."""
        now = clock.now_ms()
        hook = self.definition.on_transition if self.definition is not None else None
        # A root workflow without a hook finishes in one autocommitted statement.
        atomic = self.parent is not None or hook is not None
        publisher = self.engine.publisher
        tx = (
            self._tx()
            if self._batch is not None
            else publisher.commit_then_publish(self.session, atomic=atomic)
        )
        with tx as bells:
            done = transitions.end_child(
                self.session,
                bells,
                parent=self.parent,
                child=self.workflow_id,
                now=now,
                transition=lambda: self.session.complete(self.fence, status, output, error, now),
            )
            if done:
                bells.free(self.queue, waiting=done.waiting)
            if done and hook is not None:
                args, kwargs = serde.decode_inputs(self.inputs)
                hook(self.session.handle, Transition(status.value), detail, *args, **kwargs)
        if not done:
            # Cancelled under us (the lease is still ours: give it back), or our lease was taken
            # (preempted: nothing of ours may be written).
            return OutcomeKind.CANCELLED if self.release() else OutcomeKind.PREEMPTED
        return OutcomeKind.SUCCESS if status is WorkflowStatus.SUCCESS else OutcomeKind.ERROR

    def release(self) -> bool:
        """Give the lease back (fenced). False if it was no longer ours."""
        return self.session.release(self.fence, clock.now_ms())

    # ---- the operation template --------------------------------------------------------------

    def _take_id(self, name: str) -> tuple[int, Recorded | None]:
        self._next_id += 1
        fid = self._next_id
        rec = self.recorded.get(fid)
        if rec is not None and rec.function_name != name:
            raise NonDeterminismError(
                f"workflow {self.workflow_id} function_id {fid}: recorded {rec.function_name!r}, "
                f"replay called {name!r}"
            )
        return fid, rec

    def _operation(
        self,
        kind: OpKind,
        name: str,
        body: Callable[[Op], T],
        replay: Callable[[Op], T] = _replay_value,
        companion: str | None = None,
    ) -> T:
        """Take the operation's id (and its companion's), run the hooks around it, and replay the
        recorded result or run `body`."""
        cid, crec = self._take_id(companion) if companion else (0, None)
        fid, rec = self._take_id(name)
        op = Op(kind, name, self.workflow_id, fid, rec, cid, crec)
        hooks = self.engine.hooks
        hooks.before(op)
        try:
            result = replay(op) if rec is not None else body(op)
        except BaseException as exc:
            hooks.after(op, exc)
            raise
        hooks.after(op, None)
        return result

    # ---- bookkeeping -------------------------------------------------------------------------

    def boundary(self) -> None:
        """The step-boundary check: stop if cancelled, or if our lease was taken over.

        A status read less than `boundary_fresh_ms` ago (normally the previous checkpoint's) is
        used as is. That read also renewed our lease for `lease_ms`, so no takeover can have
        happened since; only a cancel can, and it is seen at the next boundary after that window.
        """
        fresh_s = self.engine.settings.boundary_fresh_ms / 1000
        if self._status is WorkflowStatus.PENDING and time.monotonic() - self._status_at < fresh_s:
            return
        row = self.session.boundary(self.workflow_id)
        if row is None or row.epoch != self.fence.epoch or row.executor_id != self.fence.executor_id:
            raise Preempted(self.workflow_id)
        self._observe(row.status)
        if row.status is WorkflowStatus.CANCELLED:
            raise Cancelled(self.workflow_id)
        if row.status is not WorkflowStatus.PENDING:
            raise Preempted(self.workflow_id)

    def _record(self, cp: Checkpoint) -> Recorded:
        """Write one checkpoint (fenced). Returns what is recorded at its id afterwards."""
        now = clock.now_ms()
        status, inserted = self.session.record(self.fence, cp, now, now + self.engine.settings.lease_ms)
        if status is None:
            raise Preempted(self.workflow_id)
        self._observe(status)
        if not inserted:
            # Someone recorded this id first (a forked copy or an earlier runner): theirs stands.
            got = self.session.get_step(self.workflow_id, cp.function_id)
            assert got is not None
            return got
        rec = Recorded(cp.function_id, cp.function_name, cp.output, cp.error, cp.child_workflow_id)
        if self._batch is not None:
            self._pending.append(rec)  # replayable once the batch commits (see `_Unbatch`)
        else:
            self.recorded[rec.function_id] = rec
        return rec

    def _lock_own(self) -> None:
        status = self.session.lock_own(self.fence)
        if status is None:
            raise Preempted(self.workflow_id)
        self._observe(status)

    def _park(self, wait: Wait, wake_at: int | None) -> None:
        """Release the lease and wait (inside the caller's transaction)."""
        if self.session.park(self.fence, wait, wake_at, clock.now_ms()):
            self.engine.publisher.free(self.session, self.queue)  # a parked run holds no slot
            return
        # Not parked: either cancelled while we still hold the lease (stop as cancelled, so the
        # engine gives the lease back and a resume can run at once), or no longer ours at all.
        row = self.session.boundary(self.workflow_id)
        if (
            row is not None
            and row.status is WorkflowStatus.CANCELLED
            and row.epoch == self.fence.epoch
            and row.executor_id == self.fence.executor_id
        ):
            raise Cancelled(self.workflow_id)
        raise Preempted(self.workflow_id)

    def _wait(self, wait: Wait, wake_at: int | None) -> Parked:
        """Park in a transaction of its own; the caller raises what this returns."""
        with self._tx():
            self._park(wait, wake_at)
        return Parked(self.workflow_id)

    # ---- steps -------------------------------------------------------------------------------

    def run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: RetryPolicy | None,
        pure: bool = False,
    ) -> Any:
        def body(op: Op) -> Any:
            fid = op.function_id
            # A retrying step's failed attempts (recorded before each backoff): numbering goes on.
            # An attempt is recorded only as its delivery parks, so the claim's `retried` holds for
            # the whole delivery.
            read = retry is not None and self.retried
            failed = self.session.step_attempts(self.workflow_id, fid) if read else []
            attempt = len(failed) + 1
            now = clock.now_ms()
            if failed and retry is not None:
                due = failed[-1].completed_at + retry.delay_ms_before(attempt)
                if now < due:  # woken early (a resume, a stray doorbell): the backoff still holds
                    raise self._wait(Wait(WaitKind.RETRY, str(fid)), due)
            self.boundary()
            self.step_attempt = op.attempt = attempt
            if not pure:
                self.flush()  # the function's effects leave the database: what came before commits first
            faults.reached(faults.STEP_STARTED, name)
            raised: Exception | None = None
            try:
                result = fn(*args, **kwargs)
                output, error = serde.dumps(result), None
            except Exception as exc:
                retryable = retry is not None and retry.retry_if(exc)
                if retry is not None and retryable and attempt < retry.max_attempts:
                    raise self._retry_later(fid, attempt, now, exc, retry) from exc
                if retry is not None and retryable:
                    exc = StepRetriesExceededError(
                        f"Step {name} has exceeded its maximum of {retry.max_attempts} retries. "
                        f"Previous error: {exc}"
                    )
                output, error, raised = None, serde.encode_error(exc), exc
            started = failed[0].started_at if failed else now
            checkpoint = Checkpoint(fid, name, output, error, started)
            if pure:
                with self._tx():  # no effect to make durable at once: its record joins the batch
                    stored = self._record(checkpoint)
            else:
                stored = self._record(checkpoint)
            self._committed(faults.STEP_COMMITTED, name)
            if stored.output != output or stored.error != error:
                return recorded_value(stored)
            if raised is not None:
                raise raised
            return result

        return self._operation(OpKind.STEP, name, body)

    def _retry_later(
        self, fid: int, attempt: int, started: int, exc: Exception, retry: RetryPolicy
    ) -> Parked:
        """Record the failed attempt and park for the backoff, in one transaction: no worker waits,
        and a kill during the backoff loses nothing."""
        now = clock.now_ms()
        with self._tx():
            if not self.session.record_attempt(
                self.fence, attempt, fid, serde.encode_error(exc), started, now
            ):
                raise Preempted(self.workflow_id)
            self._park(Wait(WaitKind.RETRY, str(fid)), now + retry.delay_ms_before(attempt + 1))
        return Parked(self.workflow_id)

    def run_transaction(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        batch: bool | Callable[[], bool] = True,
    ) -> Any:
        def body(op: Op) -> Any:
            started = clock.now_ms()
            if not (batch() if callable(batch) else batch):
                self.flush()  # it waits on something outside (a model call): hold no lock of the batch
            self.boundary()
            self.step_attempt = 1
            faults.reached(faults.STEP_STARTED, name)
            try:
                with self._tx():
                    result = fn(self.session.handle, *args, **kwargs)
                    output = serde.dumps(result)
                    # If the fence fails this raises Preempted and the product writes roll back with it.
                    self._record(Checkpoint(op.function_id, name, output, None, started))
            except Exception as exc:
                if self.engine.store_unavailable(exc):
                    raise  # infrastructure, not a step failure: the lease expires and the run is recovered
                stored = self._record(
                    Checkpoint(op.function_id, name, None, serde.encode_error(exc), started)
                )
                if stored.error is None:
                    return recorded_value(stored)
                self._committed(faults.STEP_COMMITTED, name)
                raise
            self._committed(faults.STEP_COMMITTED, name)
            return result

        return self._operation(OpKind.TRANSACTION, name, body)

    # ---- durable waits -----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        def body(op: Op) -> None:
            now = clock.now_ms()
            wake_at = now + max(int(seconds * 1000), 0)
            with self._tx():
                self._record(
                    Checkpoint(op.function_id, op.name, serde.dumps({"wake_at": wake_at}), None, now)
                )
                if wake_at > now:
                    self._park(Wait(WaitKind.SLEEP), wake_at)
            if wake_at <= now:
                return
            self._committed(faults.WORKFLOW_PARKED, op.name)
            raise Parked(self.workflow_id)

        def replay(op: Op) -> None:
            wake_at = int(_replay_value(op)["wake_at"])
            if clock.now_ms() < wake_at:
                raise self._wait(Wait(WaitKind.SLEEP), wake_at)

        self._operation(OpKind.SLEEP, "kodo.sleep", body, replay)

    def recv(self, topic: str, timeout_s: float) -> Any:
        def body(op: Op) -> Any:
            now = clock.now_ms()
            with self._tx():
                self._lock_own()
                if op.companion is None:
                    deadline = now + max(int(timeout_s * 1000), 0)
                    self._record(
                        Checkpoint(
                            op.companion_id,
                            "kodo.recv.deadline",
                            serde.dumps({"deadline": deadline}),
                            None,
                            now,
                        )
                    )
                else:
                    deadline = int(recorded_value(op.companion)["deadline"])
                msg = self.session.take_message(self.workflow_id, topic, op.function_id, now)
                if msg is not None or now >= deadline:
                    out = msg if msg is not None else serde.dumps(None)
                    self._record(Checkpoint(op.function_id, op.name, out, None, now))
                    return serde.loads(out)
                self._park(Wait(WaitKind.RECV, topic), deadline)
            raise Parked(self.workflow_id)

        return self._operation(OpKind.RECV, "kodo.recv", body, companion="kodo.recv.deadline")

    def send(self, destination: str, message: Any, topic: str) -> None:
        def body(op: Op) -> None:
            now = clock.now_ms()
            self.flush()  # its two row locks are taken in id order, none held from before
            with self._tx() as bells:
                # Lock both rows in id order so two workflows messaging each other cannot deadlock.
                for wid in sorted({self.workflow_id, destination}):
                    if wid == self.workflow_id:
                        self._lock_own()
                    elif self.session.lock(wid) is None:
                        raise ChildWorkflowError(f"send: no workflow {destination}")
                transitions.send_message(
                    self.session,
                    bells,
                    destination=destination,
                    topic=topic,
                    message_uuid=f"{self.workflow_id}:{op.function_id}",
                    message=serde.dumps(message),
                    now=now,
                    locked=True,
                )
                self._record(Checkpoint(op.function_id, op.name, serde.dumps(None), None, now))
            self.flush()  # rings the destination now, under this operation (see the module doc)

        self._operation(OpKind.SEND, "kodo.send", body)

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
        def body(op: Op) -> str:
            child_id = workflow_id or f"{self.workflow_id}-{op.function_id}"
            now = clock.now_ms()
            new = self.engine.new_workflow(
                wf,
                args,
                kwargs,
                workflow_id=child_id,
                queue=queue,
                partition_key=partition_key,
                parent=self.workflow_id,
            )
            with self._tx() as bells:
                bells.add(self.engine.publisher.admission.insert(self.session, new, now))
                self._record(Checkpoint(op.function_id, op.name, serde.dumps(child_id), None, now, child_id))
            self.flush()  # rings the child now, under this operation (see the module doc)
            return child_id

        def replay(op: Op) -> str:
            assert op.recorded is not None and op.recorded.child_workflow_id is not None
            return op.recorded.child_workflow_id

        return self._operation(OpKind.START_CHILD, "kodo.start_child", body, replay)

    def start_children(
        self,
        wf: WorkflowDef[Any, Any],
        calls: list[tuple[tuple[Any, ...], str]],
        queue: str | None,
        partition_key: str | None,
    ) -> list[str]:
        """Start one child per `(args, workflow_id)` in one operation: every row inserted in one
        transaction with one checkpoint (the ids), and their doorbells rung together after it."""

        def body(op: Op) -> list[str]:
            now = clock.now_ms()
            children = [
                self.engine.new_workflow(
                    wf,
                    args,
                    {},
                    workflow_id=child_id,
                    queue=queue,
                    partition_key=partition_key,
                    parent=self.workflow_id,
                )
                for args, child_id in calls
            ]
            ids = [child_id for _, child_id in calls]
            with self._tx() as bells:
                for new in children:
                    bells.add(self.engine.publisher.admission.insert(self.session, new, now))
                self._record(Checkpoint(op.function_id, op.name, serde.dumps(ids), None, now))
            self.flush()  # rings the children now, under this operation (see the module doc)
            return ids

        return list(self._operation(OpKind.START_CHILDREN, "kodo.start_children", body))

    def _fan_in(self, outcome: Callable[[], Checkpoint | Wait]) -> Recorded:
        """Lock our row, then record the children's outcome if it is final, or park on what it
        still waits for."""
        with self._tx():
            self._lock_own()
            got = outcome()
            if isinstance(got, Checkpoint):
                return self._record(got)
            self._park(got, None)
        raise Parked(self.workflow_id)

    def _child_row(self, child_id: str) -> Row | None:
        """The child's row. A running child of another workflow (we are a fork sharing our
        original's children) is read again under a share lock: its end locks its parent's row
        first, not ours, so the lock is what keeps it from ending unseen while we park."""
        child = self.session.get_workflow(child_id)
        if child is None or child["status"] in TERMINAL or child["parent_workflow_id"] == self.workflow_id:
            return child
        return self.session.lock_child(child_id)

    def get_result(self, child_id: str) -> Any:
        def body(op: Op) -> Any:
            now = clock.now_ms()

            def outcome() -> Checkpoint | Wait:
                child = self._child_row(child_id)
                if child is None:
                    raise ChildWorkflowError(f"no child workflow {child_id}")
                if child["status"] not in TERMINAL:
                    return Wait(WaitKind.CHILD, child_id)
                output, error = _child_outcome(child)
                return Checkpoint(op.function_id, op.name, output, error, now, child_id)

            return recorded_value(self._fan_in(outcome))

        return self._operation(OpKind.GET_RESULT, "kodo.get_result", body)

    def wait_children(self) -> list[dict[str, Any]]:
        """Wait for every child: those this workflow started and those its recorded `start_child`
        operations name (a fork's, copied from its original, belong to the original)."""

        def body(op: Op) -> list[dict[str, Any]]:
            now = clock.now_ms()

            def outcome() -> Checkpoint | Wait:
                rows = self.session.child_states(self.workflow_id)
                shared = sorted(
                    str(r["workflow_uuid"])
                    for r in rows
                    if r["status"] not in TERMINAL and r["parent_workflow_id"] != self.workflow_id
                )
                for cid in shared:
                    locked = self.session.lock_child(cid)  # see _child_row
                    if locked is not None and locked["status"] not in TERMINAL:
                        return Wait(WaitKind.CHILD, cid)  # its end wakes us; then we check again
                if shared:
                    rows = self.session.child_states(self.workflow_id)  # read after the share locks
                if not all(r["status"] in TERMINAL for r in rows):
                    return Wait(WaitKind.CHILDREN)  # our own children: the last one wakes us
                summary = [
                    {
                        "workflow_id": r["workflow_uuid"],
                        "status": r["status"],
                        "output": serde.loads(r["output"]),
                        "error": serde.error_message(r["error"]),
                    }
                    for r in sorted(rows, key=lambda r: str(r["workflow_uuid"]))
                ]
                return Checkpoint(op.function_id, op.name, serde.dumps(summary), None, now)

            return list(recorded_value(self._fan_in(outcome)))

        return list(self._operation(OpKind.WAIT_CHILDREN, "kodo.wait_children", body))


def _child_outcome(child: Row) -> tuple[str | None, str | None]:
    status = child["status"]
    if status == WorkflowStatus.SUCCESS:
        return child["output"], None
    if status == WorkflowStatus.ERROR and child["error"] is not None:
        return None, child["error"]
    exc = ChildWorkflowError(f"child workflow {child['workflow_uuid']} ended {status}")
    return None, serde.encode_error(exc)
