"""The rows of the system tables (`dbos.*`) as typed values.

Shared by the workflow layer's `Store` port (`kodo.workflow.ports`) and its Postgres adapter
(`kodo.db.store`), so neither layer imports the other's code for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kodo.states import WorkflowStatus

Row = dict[str, Any]


@dataclass(frozen=True)
class Doorbell:
    """A workflow to publish on `queue` after the transaction that made it runnable commits.

    `name` (the workflow's) and `partition_key` only label the message for the broker's monitors
    (Flower shows the delivery as `name`); they are not part of the doorbell's identity.
    """

    workflow_id: str
    queue: str
    name: str | None = field(default=None, compare=False)
    partition_key: str | None = field(default=None, compare=False)
    # Inserted admitted (a limited queue's row that needs no further admission to be rung).
    admitted: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Fence:
    """Who may write a workflow's checkpoints: the holder of lease epoch `epoch`."""

    workflow_id: str
    epoch: int
    executor_id: str


@dataclass(frozen=True)
class Recorded:
    """One recorded operation (`dbos.operation_outputs`)."""

    function_id: int
    function_name: str
    output: str | None
    error: str | None
    child_workflow_id: str | None


@dataclass(frozen=True)
class Attempt:
    """A failed attempt of a retrying step (`dbos.step_attempts`), recorded before its backoff."""

    function_id: int
    attempt: int
    started_at: int
    completed_at: int


@dataclass(frozen=True)
class Claim:
    """A successful claim: the fenced lease and everything needed to replay the body."""

    workflow_id: str
    status: WorkflowStatus
    epoch: int
    name: str
    inputs: str
    parent: str | None
    recovery_attempts: int
    recorded: list[Recorded] = field(default_factory=list)
    queue: str = ""
    retried: bool = True  # whether any step attempt of the run is recorded (False: none to read)


@dataclass(frozen=True)
class NoopReason:
    """Why a delivery could not claim (the row after `noop_deliveries` was counted)."""

    status: WorkflowStatus
    executor_id: str | None
    epoch: int
    wait: str | None
    app_version: str


@dataclass(frozen=True)
class Boundary:
    """The row as a step boundary sees it."""

    status: WorkflowStatus
    epoch: int
    executor_id: str | None


@dataclass(frozen=True)
class Ended:
    """A terminal write that happened. `waiting`: rows of the workflow's queue (and version) were
    waiting for admission when it ended (if its queue is limited, its freed slot is theirs)."""

    waiting: bool


@dataclass(frozen=True)
class NewWorkflow:
    workflow_id: str
    name: str
    queue: str
    inputs: str
    app_version: str
    max_recovery_attempts: int
    partition_key: str | None = None
    priority: int = 0
    deduplication_id: str | None = None
    parent: str | None = None
    forked_from: str | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True)
class Checkpoint:
    """One operation's result, to be written fenced at `function_id`."""

    function_id: int
    function_name: str
    output: str | None
    error: str | None
    started_at: int
    child_workflow_id: str | None = None


class DuplicateError(Exception):
    """A deduplication id already in use on the queue (raised by `insert_workflow`)."""
