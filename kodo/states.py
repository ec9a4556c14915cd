"""Typed states of the engine: workflow statuses, what a parked workflow waits for, and the
transitions a workflow's product hook is told about. The strings are contract: they are the values
stored in `dbos.workflow_status` (status, wait_kind) and read by the runbooks' SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WorkflowStatus(StrEnum):
    ENQUEUED = "ENQUEUED"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"


TERMINAL = frozenset(
    {
        WorkflowStatus.SUCCESS,
        WorkflowStatus.ERROR,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.MAX_RECOVERY_ATTEMPTS_EXCEEDED,
    }
)
ACTIVE = frozenset({WorkflowStatus.ENQUEUED, WorkflowStatus.PENDING})


class WaitKind(StrEnum):
    """What a parked workflow waits for (`wait_kind`); `wait_key` names the topic or the child."""

    SLEEP = "sleep"  # a durable sleep until wake_at
    RECV = "recv"  # a message on topic `key`, or the receive deadline (wake_at)
    CHILD = "child"  # child workflow `key` to finish
    CHILDREN = "children"  # every child to finish
    RETRY = "retry"  # the backoff before the next attempt of step `key` (a function id)


@dataclass(frozen=True)
class Wait:
    kind: WaitKind
    key: str | None = None

    @property
    def reason(self) -> str:
        """The legacy text form (`dbos.workflow_status.wait_reason`, generated from kind and key)."""
        return self.kind.value if self.key is None else f"{self.kind.value}:{self.key}"


class Transition(StrEnum):
    """Engine transitions a workflow's `on_transition` hook runs in (inside the same transaction)."""

    SUCCESS = "SUCCESS"  # the body returned; the terminal write commits with the hook's writes
    ERROR = "ERROR"  # the body raised; `detail` is the error message
    CANCELLED = "CANCELLED"  # cancelled (by a client or a timeout), whether or not a worker runs it
    RESUMED = "RESUMED"  # resumed after a cancel or exhausted recovery


class OutcomeKind(StrEnum):
    """What one delivery did."""

    SUCCESS = "success"
    ERROR = "error"
    PARKED = "parked"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    NOOP = "noop"
    EXCEEDED = "exceeded"


class OpKind(StrEnum):
    """The durable primitives; each runs through the one operation template."""

    STEP = "step"
    TRANSACTION = "transaction"
    SLEEP = "sleep"
    SEND = "send"
    RECV = "recv"
    START_CHILD = "start_child"
    START_CHILDREN = "start_children"
    GET_RESULT = "get_result"
    WAIT_CHILDREN = "wait_children"
