"""The ops plane's six routes (contract-api §2 rows 18-23, §9): list, get, steps, cancel, resume, fork.

These are the only `/api/ops/wf*` routes (the exact-six law; `tests/integration/test_api_ops.py`
checks it). Each POST runs the contract's order (§3.5): parse the body, validate it, then the
service looks the workflow up (404), checks its state (409), acts and audits in one transaction, so a
rejected request writes nothing. Bodies and errors say `workflowID` (the /api casing).
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, current_app, request

from kodo.api import auth
from kodo.api.errors import json_response
from kodo.api.openapi import CONFLICT, NOT_FOUND, Link, body_of, operation
from kodo.api.schemas import validate
from kodo.intent.ops import (
    CancelWorkflowRequest,
    ForkAccepted,
    ForkWorkflowRequest,
    ListWorkflowsQuery,
    OpsAccepted,
    OpsService,
    OpsWorkflowDetail,
    OpsWorkflowSummary,
    ResumeWorkflowRequest,
    WorkflowStepSummary,
)

SERVICE_KEY = "kodo.ops"

bp = Blueprint("ops", __name__)


def service() -> OpsService:
    """The OpsService of the current app (built on first use from the app's Runtime)."""
    svc: OpsService | None = current_app.extensions.get(SERVICE_KEY)
    if svc is None:
        svc = current_app.extensions[SERVICE_KEY] = OpsService(current_app.extensions["kodo.runtime"])
    return svc


def _number(text: str) -> object:
    """`limit` is read as a number first (§1.4, like JavaScript's Number): `5` and `5.0` are 5, an
    empty value is 0 (then below the minimum), anything else stays as is and fails as not an integer."""
    if text.strip() == "":
        return 0
    if "_" in text:  # Python's float() reads digit separators; Number() does not
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if math.isfinite(value) and value.is_integer() else value


def _query() -> dict[str, object]:
    """The query string as the schema sees it: a repeated key is a list (and fails its type)."""
    out: dict[str, object] = {}
    for key, values in request.args.lists():
        value: Any = values[0] if len(values) == 1 else values
        out[key] = _number(value) if key == "limit" and isinstance(value, str) else value
    return out


def _accepted(workflow_id: str, **extra: str) -> Response:
    return json_response({"accepted": True, "workflowID": workflow_id, **extra}, 202)


def _actor(given: str | None) -> str | None:
    """The audit row's actor: the bearer token's name when tokens are on, else the body's."""
    return auth.principal() or given


def workflow_links(workflow_id: str) -> dict[str, Link]:
    """What a workflow id can be asked next (the stateful tests follow these)."""
    return {
        "GetWorkflow": Link("ops.get_workflow", {"workflow_id": workflow_id}),
        "GetWorkflowSteps": Link("ops.get_workflow_steps", {"workflow_id": workflow_id}),
        "CancelWorkflow": Link("ops.cancel_workflow", {"workflow_id": workflow_id}),
        "ResumeWorkflow": Link("ops.resume_workflow", {"workflow_id": workflow_id}),
        "ForkWorkflow": Link("ops.fork_workflow", {"workflow_id": workflow_id}),
    }


_WID = "$response.body#/workflowID"
_TAGS = ("ops",)


@bp.get("/api/ops/wf")
@operation(
    "Engine workflows, newest first (limit 1-200, default 20; unknown keys are a 400)",
    {200: list[OpsWorkflowSummary]},
    query=ListWorkflowsQuery,
    tags=_TAGS,
)
def list_workflows() -> Response:
    query = validate(ListWorkflowsQuery, _query(), "ListWorkflowsQuery")
    statuses = [query.status] if query.status is not None else None
    return json_response(service().list_workflows(statuses=statuses, name=query.name, limit=query.limit))


@bp.get("/api/ops/wf/<workflow_id>")
@operation("One workflow and its audit trail (newest first)", {200: OpsWorkflowDetail}, tags=_TAGS)
def get_workflow(workflow_id: str) -> Response:
    return json_response(service().get(workflow_id))


@bp.get("/api/ops/wf/<workflow_id>/steps")
@operation("Its recorded operations (functionId from 0)", {200: list[WorkflowStepSummary]}, tags=_TAGS)
def get_workflow_steps(workflow_id: str) -> Response:
    return json_response(service().steps(workflow_id))


@bp.post("/api/ops/wf/<workflow_id>/cancel")
@operation(
    "Cancel (from PENDING or ENQUEUED; stops at the next step boundary), audited",
    {202: OpsAccepted},
    errors=(NOT_FOUND, CONFLICT),
    body=CancelWorkflowRequest,
    tags=_TAGS,
    links={202: workflow_links(_WID)},
)
def cancel_workflow(workflow_id: str) -> Response:
    req = body_of(CancelWorkflowRequest)
    service().cancel(workflow_id, actor=_actor(req.actor), reason=req.reason)
    return _accepted(workflow_id)


@bp.post("/api/ops/wf/<workflow_id>/resume")
@operation(
    "Resume the same id from its checkpoints (from CANCELLED or ENQUEUED), audited",
    {202: OpsAccepted},
    errors=(NOT_FOUND, CONFLICT),
    body=ResumeWorkflowRequest,
    tags=_TAGS,
    links={202: workflow_links(_WID)},
)
def resume_workflow(workflow_id: str) -> Response:
    req = body_of(ResumeWorkflowRequest)
    service().resume(workflow_id, actor=_actor(req.actor), reason=req.reason)
    return _accepted(workflow_id)


@bp.post("/api/ops/wf/<workflow_id>/fork")
@operation(
    "Fork: a new id reusing the operations before stepN (409 past the last one), audited",
    {202: ForkAccepted},
    errors=(NOT_FOUND, CONFLICT),
    body=ForkWorkflowRequest,
    body_required=True,
    tags=_TAGS,
    links={202: workflow_links("$response.body#/forkedWorkflowID")},
)
def fork_workflow(workflow_id: str) -> Response:
    req = body_of(ForkWorkflowRequest)
    forked = service().fork(
        workflow_id, req.step_n, app_version=req.app_version, actor=_actor(req.actor), reason=req.reason
    )
    return _accepted(workflow_id, forkedWorkflowID=forked)
