"""The ops control plane (contract-api §9): list, read, cancel, resume and fork engine workflows.

`OpsService` is what both the HTTP routes (`kodo/api/ops.py`) and the operators' command (`kodo
workflow ...`, `kodo ops ...`) call, so an action is checked and audited the same way whichever way
it comes in. The actions go through the workflow client; the audit artifact (§9.7) is written by the
client's `audit` callback inside the action's own transaction, so it commits with the action and a
rejected action (404, 409) writes nothing.

Numbering: the contract's `functionId` counts a workflow's operations from 0; kodo's function ids
(`dbos.operation_outputs.function_id`) count from 1. `functionId = function_id - 1`, and a fork at
`stepN` copies the operations with `functionId < stepN`, i.e. `Client.fork(wid, stepN + 1)`.

The request models and response shapes live here with the service (the API validates against them
and `/openapi.json` documents them). Must not import flask.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from kodo import clock
from kodo.db.jsonb import Jsonb
from kodo.db.pool import Database
from kodo.db.queries import Q
from kodo.errors import ConflictError, NotFoundError
from kodo.intent import artifacts
from kodo.intent.canonical import sha256_hex
from kodo.intent.projections import checked, iso
from kodo.intent.requests import Text
from kodo.states import WorkflowStatus
from kodo.workflow import serde
from kodo.workflow.client import Audit, Client

Row = Mapping[str, Any]

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
OPS_STEP = "OPS"
AUDIT_KIND = "json_diagnostic"
# A workflow is cancelled only while it is queued or running, and resumed over HTTP only when it was
# cancelled or is still queued (§9.4, §9.5). The engine can also resume a workflow that ran out of
# recovery attempts; the contract answers 409 for it (an operator forks such a workflow instead).
CANCELLABLE = frozenset({WorkflowStatus.PENDING, WorkflowStatus.ENQUEUED})
RESUMABLE = frozenset({WorkflowStatus.CANCELLED, WorkflowStatus.ENQUEUED})

StatusName = Literal["PENDING", "SUCCESS", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED", "ENQUEUED"]
Op = Literal["cancel", "resume", "fork"]

# ---- requests (§3.5) ---------------------------------------------------------------------------


class ListWorkflowsQuery(BaseModel):
    """`ListWorkflowsQuery`: the query of `GET /api/ops/wf` (limit already read as a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ListWorkflowsQuery")

    status: StatusName | None = None
    name: Text | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class CancelWorkflowRequest(BaseModel):
    """`CancelWorkflowRequest`: who and why, both optional (S7; `{}` is accepted)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="CancelWorkflowRequest")

    actor: Text | None = None
    reason: Text | None = None


class ResumeWorkflowRequest(BaseModel):
    """`ResumeWorkflowRequest`: who and why, both optional (S7; `{}` is accepted)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ResumeWorkflowRequest")

    actor: Text | None = None
    reason: Text | None = None


class ForkWorkflowRequest(BaseModel):
    """`ForkWorkflowRequest`: fork at operation `stepN` (a 0-based functionId, at least 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ForkWorkflowRequest")

    step_n: Annotated[int, Field(ge=1)] = Field(alias="stepN")
    # Non-empty: an empty version (`"appVersion":"$V"` with V unset) would silently mean "this one".
    app_version: Annotated[Text, Field(min_length=1)] | None = Field(default=None, alias="appVersion")
    actor: Text | None = None
    reason: Text | None = None


# ---- responses (§9.1-9.3), each checked on the way out ------------------------------------------
CLOSED = ConfigDict(extra="forbid")


@with_config(CLOSED)
class OpsWorkflowSummary(TypedDict):
    """`OpsWorkflowSummary.v0`: one engine workflow."""

    workflowID: str
    status: StatusName
    workflowName: str
    workflowClassName: str
    queueName: NotRequired[str]
    applicationVersion: NotRequired[str]
    createdAt: int
    updatedAt: NotRequired[int]


@with_config(CLOSED)
class OpsAuditEntry(TypedDict):
    """One accepted operator action on the workflow (or the fork that created it)."""

    op: str
    actor: str
    reason: str
    at: str
    targetWorkflowID: str
    forkedWorkflowID: NotRequired[str]


@with_config(CLOSED)
class OpsWorkflowDetail(OpsWorkflowSummary):
    """`GET /api/ops/wf/:wid`: the summary plus its audit trail, newest first."""

    audit: list[OpsAuditEntry]


@with_config(CLOSED)
class WorkflowStepSummary(TypedDict):
    """`WorkflowStepSummary.v0`: one recorded operation; `functionId` counts from 0."""

    stepId: str
    functionId: int
    status: Literal["PENDING", "SUCCESS", "ERROR"]
    startedAt: NotRequired[int]
    completedAt: NotRequired[int]
    error: NotRequired[str]


class OpsAccepted(TypedDict):
    accepted: Literal[True]
    workflowID: str


class ForkAccepted(TypedDict):
    accepted: Literal[True]
    workflowID: str
    forkedWorkflowID: str


SUMMARIES: TypeAdapter[list[OpsWorkflowSummary]] = TypeAdapter(list[OpsWorkflowSummary])
DETAIL: TypeAdapter[OpsWorkflowDetail] = TypeAdapter(OpsWorkflowDetail)
STEPS: TypeAdapter[list[WorkflowStepSummary]] = TypeAdapter(list[WorkflowStepSummary])


# ---- projections: built so that no row of the engine's tables can fail them ----------------------


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def summary(row: Row) -> OpsWorkflowSummary:
    """A workflow row as OpsWorkflowSummary. `IntentWorkflow.run` is workflow `run` of class
    `IntentWorkflow`; an undotted name (`CrashDemoWorkflow`) is both. A blank name falls back to the
    workflow id, a blank class to the workflow name; blank queue and version are left out."""
    wid = str(row["workflow_uuid"])
    cls, _, fn = _text(row["name"]).rpartition(".")
    name = fn or wid
    out: dict[str, Any] = {
        "workflowID": wid,
        "status": row["status"],
        "workflowName": name,
        "workflowClassName": _text(row["class_name"]) or cls or name,
    }
    if _text(row["queue_name"]):
        out["queueName"] = row["queue_name"]
    if _text(row["application_version"]):
        out["applicationVersion"] = row["application_version"]
    out["createdAt"] = int(row["created_at"])
    if row["updated_at"] is not None:
        out["updatedAt"] = int(row["updated_at"])
    return cast(OpsWorkflowSummary, out)


def _error_text(raw: str) -> str:
    """A recorded error as `Type: message` (kodo stores it as JSON); anything else as stored."""
    try:
        return serde.error_message(raw) or raw
    except (ValueError, AttributeError):
        return raw


def step_summary(row: Row) -> WorkflowStepSummary:
    completed = row["completed_at_epoch_ms"]
    status = "PENDING" if completed is None else "ERROR" if row["error"] is not None else "SUCCESS"
    out: dict[str, Any] = {
        "stepId": row["function_name"],
        "functionId": int(row["function_id"]) - 1,
        "status": status,
    }
    if row["started_at_epoch_ms"] is not None:
        out["startedAt"] = int(row["started_at_epoch_ms"])
    if completed is not None:
        out["completedAt"] = int(completed)
    if row["error"] is not None:
        out["error"] = _error_text(str(row["error"]))
    return cast(WorkflowStepSummary, out)


def audit_entry(inline: Any) -> OpsAuditEntry:
    """An OPS artifact's inline as an audit entry: absent actor is "system", absent reason "-"."""
    data: Mapping[str, Any] = inline if isinstance(inline, Mapping) else {}

    def field(key: str, default: str = "") -> str:
        value = data.get(key)
        return default if value is None else str(value)

    out: dict[str, Any] = {
        "op": field("op"),
        "actor": field("actor", "system"),
        "reason": field("reason", "-"),
        "at": field("at"),
        "targetWorkflowID": field("targetWorkflowID"),
    }
    if data.get("forkedWorkflowID") is not None:
        out["forkedWorkflowID"] = field("forkedWorkflowID")
    return cast(OpsAuditEntry, out)


# ---- the audit artifact (§9.7) -----------------------------------------------------------------

_SEQ = itertools.count(1)


def _now_iso() -> str:
    return iso(datetime.fromtimestamp(clock.now_ms() / 1000, UTC))


def audit_inline(
    op: Op, workflow_id: str, actor: str | None, reason: str | None, forked: str | None = None
) -> dict[str, Any]:
    """`{op, targetWorkflowID, at, actor?, reason?, forkedWorkflowID?}`: absent values are left out."""
    inline: dict[str, Any] = {"op": op, "targetWorkflowID": workflow_id, "at": _now_iso()}
    if actor is not None:
        inline["actor"] = actor
    if reason is not None:
        inline["reason"] = reason
    if forked is not None:
        inline["forkedWorkflowID"] = forked
    return inline


def _audit_run(c: Any, workflow_id: str) -> str:
    """The run the audit row joins; the synthetic `it-ops-<wid>` intent and `<wid>` run if none."""
    row = c.execute(Q["ops_audit_run"], {"workflow_id": workflow_id}).fetchone()
    if row is not None:
        return str(row["id"])
    intent_id = f"it-ops-{workflow_id}"
    payload = Jsonb({"inputs": {}, "constraints": {}})
    c.execute(Q["ops_insert_audit_intent"], {"intent_id": intent_id, "payload": payload})
    c.execute(Q["ops_insert_audit_run"], {"workflow_id": workflow_id, "intent_id": intent_id})
    return workflow_id


def audit(op: Op, workflow_id: str, actor: str | None, reason: str | None) -> Audit:
    """The client's `audit` callback: one OPS artifact, in the action's transaction.

    The slot key is `op-intent:<op>:<sha256 of inline>:<pid>-<n>`: the inline carries the time, and
    the process's counter keeps two actions of the same millisecond in two rows.
    """

    def write(c: Any, forked: str | None) -> None:
        inline = audit_inline(op, workflow_id, actor, reason, forked)
        digest = sha256_hex(inline)
        task_key = f"op-intent:{op}:{digest}:{os.getpid()}-{next(_SEQ):06d}"
        art = artifacts.Artifact(AUDIT_KIND, f"op-intent-{op}.json", inline, digest)
        artifacts.put(c, _audit_run(c, workflow_id), OPS_STEP, 0, art, attempt=1, task_key=task_key)

    return write


# ---- the service -------------------------------------------------------------------------------


class OpsBackend(Protocol):
    """What the service needs of the process's wiring (`kodo.runtime.Runtime` has it)."""

    db: Database
    client: Client


class OpsService:
    """The control plane over one Runtime (its database and workflow client)."""

    def __init__(self, runtime: OpsBackend) -> None:
        self.db = runtime.db
        self.client = runtime.client

    # ---- reads --------------------------------------------------------------------------------

    def list_workflows(
        self, *, statuses: Sequence[str] | None = None, name: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[OpsWorkflowSummary]:
        """Workflows newest first (then by id), filtered by status and name; at most `limit`."""
        params = {"statuses": list(statuses) if statuses else None, "name": name, "limit": limit}
        with self.db.conn() as c:
            rows = c.execute(Q["ops_list_workflows"], params).fetchall()
        result: list[OpsWorkflowSummary] = checked(SUMMARIES, [summary(r) for r in rows])
        return result

    def _row(self, c: Any, workflow_id: str) -> Row:
        row: Row | None = c.execute(Q["ops_get_workflow"], {"workflow_id": workflow_id}).fetchone()
        if row is None:
            raise NotFoundError(f"workflow not found: {workflow_id}")
        return row

    def get(self, workflow_id: str) -> OpsWorkflowDetail:
        """The summary and its audit trail (newest first). A read: it writes nothing."""
        # HEAD's GET could insert the synthetic `it-ops-<wid>` rows while building `audit`; here only
        # an accepted action writes them (§1.5 exception 4 is not taken): a GET never writes.
        with self.db.conn() as c:
            row = self._row(c, workflow_id)
            ids = [workflow_id] + ([row["forked_from"]] if row["forked_from"] else [])
            audit_rows = c.execute(
                Q["ops_audit"], {"workflow_id": workflow_id, "workflow_ids": ids}
            ).fetchall()
        detail: dict[str, Any] = {**summary(row), "audit": [audit_entry(r["inline"]) for r in audit_rows]}
        result: OpsWorkflowDetail = checked(DETAIL, detail)
        return result

    def steps(self, workflow_id: str) -> list[WorkflowStepSummary]:
        """Every recorded operation, `functionId` from 0, in execution order."""
        with self.db.conn() as c:
            self._row(c, workflow_id)
            rows = c.execute(Q["ops_list_steps"], {"workflow_id": workflow_id}).fetchall()
        result: list[WorkflowStepSummary] = checked(STEPS, [step_summary(r) for r in rows])
        return result

    # ---- actions (each audited in its own transaction) ---------------------------------------

    def cancel(self, workflow_id: str, *, actor: str | None = None, reason: str | None = None) -> None:
        """PENDING/ENQUEUED -> CANCELLED (a runner stops at its next step boundary).

        NotFoundError for an unknown workflow, ConflictError `cannot cancel workflow in status S`."""
        self.client.cancel(workflow_id, audit=audit("cancel", workflow_id, actor, reason))

    def resume(self, workflow_id: str, *, actor: str | None = None, reason: str | None = None) -> None:
        """CANCELLED/ENQUEUED -> runs again under the same id, from its checkpoints.

        NotFoundError, or ConflictError `cannot resume workflow in status S` (also for
        MAX_RECOVERY_ATTEMPTS_EXCEEDED, which the engine alone would resume). The status is read
        before the client's guarded transition: a row never becomes MAX_RECOVERY_ATTEMPTS_EXCEEDED
        from CANCELLED, nor from ENQUEUED (an ENQUEUED row has no lease holder to run out of), so
        what passes here meets the client's guard in a resumable status or gets its 409."""
        status = self.client.get(workflow_id)["status"]
        if status not in RESUMABLE:
            raise ConflictError(f"cannot resume workflow in status {status}")
        self.client.resume(workflow_id, audit=audit("resume", workflow_id, actor, reason))

    def max_step(self, workflow_id: str) -> int:
        """The highest recorded functionId (0-based), 0 when none: the fork bound (§9.6)."""
        with self.db.conn() as c:
            self._row(c, workflow_id)
            row = c.execute(Q["ops_max_step"], {"workflow_id": workflow_id}).fetchone()
        return 0 if row is None else int(row["max_step"])

    def fork(
        self,
        workflow_id: str,
        step_n: int,
        *,
        app_version: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        """A new workflow (a fresh UUID) with the same function and inputs, reusing the recorded
        operations with functionId < `step_n` and running the rest; returns its id.

        NotFoundError, or ConflictError `fork stepN <n> exceeds max step <m>` when `step_n` is past
        the last recorded operation (recorded operations only grow, so a bound that holds here
        holds in the client's transaction too)."""
        limit = self.max_step(workflow_id)
        if step_n > limit:
            raise ConflictError(f"fork stepN {step_n} exceeds max step {limit}")
        return self.client.fork(
            workflow_id, step_n + 1, app_version=app_version, audit=audit("fork", workflow_id, actor, reason)
        )
