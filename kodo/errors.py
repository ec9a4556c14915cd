"""The kodo error tree. Each error has a stable `code`; `kodo.api.errors` maps them to HTTP once.

KodoError
├── ConfigError               bad environment value (process refuses to start)
├── NotFoundError             a workflow, message destination or resource does not exist
├── ConflictError             an operation is not allowed in the current status
│   └── RunStateError         a run's status forbids the request (carries the run's status)
├── ValidationError           a request failed its parsing or a precondition
│   ├── SchemaError           a request body failed its schema (carries the per-field details)
│   └── QueuePolicyError      a run start broke the queue policy (code queue_policy_violation)
├── UnauthorizedError         no bearer token where KODO_API_TOKENS requires one (HTTP 401)
├── ForbiddenError            a bearer token that is not one of KODO_API_TOKENS (HTTP 403)
├── UnavailableError          a dependency (the database) does not answer
│   └── DatabaseUnavailableError  Postgres does not answer (HTTP 503, code db_unavailable)
├── NonDeterminismError       replay found a different step at a recorded function_id
├── UnknownWorkflowError      no workflow is registered under a recorded name
├── RecordedStepError         replays a recorded step failure whose class cannot be rebuilt
├── StepRetriesExceededError  a retrying step failed on every attempt
└── ChildWorkflowError        a child workflow ended cancelled or out of recovery attempts

WorkflowInterrupt (BaseException: must never be swallowed by `except Exception`)
├── Parked                    the workflow released its lease to wait (sleep, message, children)
├── Cancelled                 the workflow was cancelled; stop at this step boundary
└── Preempted                 our lease epoch is stale: another runner owns the workflow
"""

from __future__ import annotations

from typing import Any


class KodoError(Exception):
    """Base of every expected kodo error."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(KodoError):
    code = "config_error"


class NotFoundError(KodoError):
    code = "not_found"


class ConflictError(KodoError):
    code = "conflict"


class RunStateError(ConflictError):
    """The run's state machine forbids the request; `run_status` is the status it is in."""

    code = "run_state_conflict"

    def __init__(self, message: str, *, run_status: str) -> None:
        super().__init__(message)
        self.run_status = run_status


class ValidationError(KodoError):
    code = "validation_error"


class SchemaError(ValidationError):
    """A request body failed its schema; `details` lists one reason per failed check."""

    code = "schema_violation"

    def __init__(self, message: str, *, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


class QueuePolicyError(ValidationError):
    """A run start broke the queue policy (contract-api §5.2); the message is the contract's."""

    code = "queue_policy_violation"


class UnauthorizedError(KodoError):
    """A protected route was called without `Authorization: Bearer <token>` (or a malformed one)."""

    code = "unauthorized"


class ForbiddenError(KodoError):
    """A protected route was called with a bearer token nobody was given."""

    code = "forbidden"


class UnavailableError(KodoError):
    """A dependency the request needs (the database) does not answer."""

    code = "unavailable"


class DatabaseUnavailableError(UnavailableError):
    """Postgres does not answer (down, restarting, no connection within the pool timeout)."""

    code = "db_unavailable"


class NonDeterminismError(KodoError):
    code = "non_determinism"


class UnknownWorkflowError(KodoError):
    code = "unknown_workflow"


class RecordedStepError(KodoError):
    """Replays a recorded step failure whose exception class cannot be rebuilt."""

    code = "step_failed"

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class StepRetriesExceededError(KodoError):
    """A retrying step failed on every attempt; the message names the step, limit and last error."""

    code = "step_retries_exceeded"


class WorkflowInterrupt(BaseException):
    """Unwinds a workflow function without marking it failed."""


class Parked(WorkflowInterrupt):
    """The workflow is waiting; its lease is released and a waker will republish it."""


class Cancelled(WorkflowInterrupt):
    """The workflow's status became CANCELLED; it stops at the step boundary."""


class Preempted(WorkflowInterrupt):
    """Our lease epoch is stale (a zombie or duplicate delivery); stop without writing anything."""


class ChildWorkflowError(KodoError):
    """A child workflow ended CANCELLED or MAX_RECOVERY_ATTEMPTS_EXCEEDED (no error of its own)."""

    code = "child_failed"
