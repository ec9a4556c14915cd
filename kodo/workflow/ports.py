"""What the workflow layer needs from the outside world, as typed ports.

`Store` is the system database (in the spirit of DBOS's `SystemDatabase` and procrastinate's
connector): every read and write of `dbos.*` the engine makes. The Postgres adapter is
`kodo.db.store.PgStore`; an in-memory fake (`tests/support/memstore.py`) runs the replay, fencing,
wait and cancel logic in unit tests. Transition methods return the `Doorbell`s to ring once their
transaction commits; `kodo.workflow.publisher.Publisher` is the one place that rings them.

`Dispatcher` is the broker (a doorbell only: Postgres is the truth).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from kodo.config import QueueLimits
from kodo.records import (
    Attempt,
    Boundary,
    Checkpoint,
    Claim,
    Doorbell,
    Ended,
    Fence,
    NewWorkflow,
    NoopReason,
    Recorded,
    Row,
)
from kodo.states import Wait, WorkflowStatus


class Session(Protocol):
    """One connection to the store. Statements autocommit unless inside `transaction()`."""

    @property
    def handle(self) -> Any:
        """The product connection: passed to @transaction functions and `on_transition` hooks."""

    def transaction(self) -> AbstractContextManager[None]:
        """A transaction (a savepoint when one is open already)."""

    # ---- claiming --------------------------------------------------------------------------
    def claim(
        self, workflow_id: str, executor_id: str, app_version: str, now: int, lease_until: int, node: str = ""
    ) -> Claim | None:
        """Take the fenced lease (epoch + 1) of a runnable row and load its recorded operations.

        A row of a limited queue must be admitted, and worker `node` under its per-worker caps (at
        a cap the row gives its slot back and None is returned)."""

    def count_noop(self, workflow_id: str, app_version: str) -> NoopReason | None:
        """Count a delivery that could not claim; say why (None: unknown id)."""

    def expire_lease(self, workflow_id: str, executor_id: str, epoch: int, now: int) -> None:
        """The holder is dead: end its lease now (published_at = now)."""

    # ---- a claimed run's writes (fenced) ---------------------------------------------------
    def record(
        self, fence: Fence, cp: Checkpoint, now: int, lease_until: int
    ) -> tuple[WorkflowStatus | None, bool]:
        """Renew the lease and insert the checkpoint if the fence holds: (status, inserted).

        status None: the fence failed and nothing was written."""

    def record_attempt(
        self, fence: Fence, attempt: int, function_id: int, error: str, started_at: int, now: int
    ) -> bool:
        """Record a failed attempt of a retrying step (fenced); False if the fence failed."""

    def step_attempts(self, workflow_id: str, function_id: int) -> list[Attempt]:
        """The failed attempts recorded for a retrying step, in order."""

    def get_step(self, workflow_id: str, function_id: int) -> Recorded | None: ...

    def boundary(self, workflow_id: str) -> Boundary | None: ...

    def lock_own(self, fence: Fence) -> WorkflowStatus | None:
        """Lock our own row (fenced) before checking a wait condition; None if not ours."""

    def lock(self, workflow_id: str) -> Row | None:
        """A waker locks the waiter's row before writing what it waits for (no lost wake-ups)."""

    def park(self, fence: Fence, wait: Wait, wake_at: int | None, now: int) -> bool:
        """Release the lease and wait (a timer at wake_at is announced to the timer loops)."""

    def release(self, fence: Fence, now: int) -> bool:
        """Give the lease back without finishing; False if it was no longer ours."""

    def abandon(self, fence: Fence, now: int) -> Doorbell | None:
        """A delivery failed on infrastructure: end our lease now (lease_until 0, so the next claim
        counts a recovery attempt) and return the row's doorbell; None if it was no longer ours."""

    def complete(
        self, fence: Fence, status: WorkflowStatus, output: str | None, error: str | None, now: int
    ) -> Ended | None:
        """The terminal write (fenced; a CANCELLED row is not overwritten); None if not written."""

    # ---- wakers ----------------------------------------------------------------------------
    def lock_child_waiters(self, parent: str, child: str) -> None:
        """Before `child`'s terminal write: lock the rows its end may wake, in id order: `parent`'s,
        and every row parked on `child` (a fork shares its original's children)."""

    def wake_child_waiters(self, parent: str, child: str, now: int) -> list[Doorbell]:
        """After `child` ended: wake every row parked on it, and `parent` if it waits for all its
        children and none is left running (the rows `lock_child_waiters` locked)."""

    def wake_receiver(self, destination: str, topic: str, now: int) -> Doorbell | None:
        """Wake `destination` if it is parked on `topic` (its row locked)."""

    def insert_notification(
        self, message_uuid: str, destination: str, topic: str, message: str, now: int
    ) -> bool:
        """A durable message; False if `message_uuid` exists (an idempotent re-send)."""

    def take_message(self, workflow_id: str, topic: str, function_id: int, now: int) -> str | None:
        """Consume the oldest unconsumed message on `topic`, or None."""

    # ---- workflows -------------------------------------------------------------------------
    def insert_workflow(self, new: NewWorkflow, now: int, *, admit: bool = False) -> Doorbell | None:
        """Create the row (ENQUEUED); None if the id exists. Raises DuplicateError on a dedup clash.
        `admit` (a limited queue): admit the row as it is inserted if it has room and nothing else of
        its queue waits; the doorbell says whether it was (`Doorbell.admitted`)."""

    def get_workflow(self, workflow_id: str) -> Row | None: ...

    def lock_child(self, child: str) -> Row | None:
        """Read a child's status, output and error under a share lock. A waiter that is not the
        child's parent (a fork) reads it this way: the child's terminal write then either committed
        before the read, or waits until the waiter parked (and then wakes it)."""

    def child_states(self, parent: str) -> list[Row]: ...

    def cancel(self, workflow_id: str, now: int) -> bool:
        """ENQUEUED/PENDING -> CANCELLED (the runner, if any, keeps its lease until its boundary)."""

    def resume(self, workflow_id: str, now: int) -> Doorbell | None:
        """CANCELLED/ENQUEUED/MAX_RECOVERY_ATTEMPTS_EXCEEDED -> runnable again; None if not allowed."""

    def max_function_id(self, workflow_id: str) -> int: ...

    def fork_copy(self, new_workflow_id: str, workflow_id: str, start_step: int) -> None:
        """Copy the recorded operations before `start_step` into the forked workflow."""

    def list_steps(self, workflow_id: str) -> list[Row]: ...

    def renew_leases(self, executor_id: str, lease_until: int) -> None: ...

    def mark_unpublished(self, workflow_id: str) -> None:
        """A publish failed: let the next reconciler pass ring this row again."""

    # ---- admission -------------------------------------------------------------------------
    def limited_queues(self) -> frozenset[str]:
        """The queues with limits: their runnable rows wait for admission."""

    def admit(self, queue: str, app_version: str, now: int, hints: list[str]) -> list[Doorbell]:
        """Admit the waiting rows of `queue` (this version) that its limits allow, fairly across its
        partitions, and return the doorbells to ring: those, and the `hints` (rows this transaction
        made runnable) that hold a slot already. Unlimited queue: the runnable hinted rows."""

    def due_windows(self, now: int) -> list[str]:
        """Limited queues whose rate window reopened for waiting work."""

    def write_env_limits(self, limits: Mapping[str, QueueLimits], now: int) -> None:
        """The environment's default limits (a queue an operator has set keeps its own)."""

    # ---- reconciler ------------------------------------------------------------------------
    def wake_due_timers(self, now: int, app_version: str, limit: int) -> list[Doorbell]: ...

    def next_wake_at(self, app_version: str) -> int | None: ...

    def leases_on_host(self, host_prefix: str) -> list[Row]: ...

    def republish_stale(
        self, now: int, app_version: str, limit: int, republish_after: int, broker_reset: int = 0
    ) -> list[Doorbell]:
        """Runnable unclaimed rows published over a window ago, or before `broker_reset` (epoch ms)."""

    def expired_workflows(self, now: int, app_version: str, limit: int) -> list[str]: ...

    def try_singleton(self, key: int) -> bool:
        """Take a fleet-wide lock for the rest of the open transaction (False: another holds it)."""

    # ---- scheduler -------------------------------------------------------------------------
    def last_schedule_tick(self, schedule_name: str) -> int | None:
        """The newest tick (epoch ms) of a schedule, or None if it never ticked."""

    def insert_schedule_tick(self, schedule_name: str, tick_ms: int, workflow_id: str, now: int) -> bool:
        """Claim one tick of a schedule (ON CONFLICT DO NOTHING); False if it was claimed already."""


class TimerListener(Protocol):
    def wait(self, timeout_s: float) -> None:
        """Return when a new timer is announced, or after `timeout_s`."""


class Store(Protocol):
    def session(self) -> AbstractContextManager[Session]:
        """A session on one connection (a pool checkout), for as long as the block runs."""

    def bind(self, handle: Any) -> Session:
        """A session on a product connection the caller already holds (its transaction included)."""

    def listen_timers(self) -> AbstractContextManager[TimerListener]:
        """A dedicated listener for timer announcements (the reconciler's loop)."""

    def product_connection(self, transaction: bool = False) -> AbstractContextManager[Any]:
        """A connection for product reads and writes outside any checkpoint."""


class Dispatcher(Protocol):
    def publish(
        self, workflow_id: str, queue: str, *, name: str | None = None, partition_key: str | None = None
    ) -> None:
        """Ring one doorbell; `name` and `partition_key` label the message for the broker's monitors."""
