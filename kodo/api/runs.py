"""Run routes: legacy `/intents/:id/run` and `/runs/:id*`, data-plane `/api/runs*` (contract-api §4.3-4.8).

Each handler runs the contract's checks in the contract's order and writes nothing before the
last check passed. Legacy bodies say `workflowId`, the /api ones `workflowID`.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, request
from typing_extensions import TypedDict

from kodo.api.errors import json_response
from kodo.api.intents import service
from kodo.api.openapi import CONFLICT, INTERNAL, NOT_FOUND, Link, body_of, operation
from kodo.api.schemas import check_text, parse_json_body, validate
from kodo.errors import NotFoundError, RunStateError, ValidationError
from kodo.intent import projections
from kodo.intent.projections import RunHeader, RunView, StepRow
from kodo.intent.requests import PlanApprovalRequest, RunEvent, RunRequest, StartRunRequest
from kodo.intent.service import check_accepts_event, check_retryable

bp = Blueprint("runs", __name__)

Row = dict[str, Any]


class RunStarted(TypedDict):
    runId: str
    workflowId: str


class Accepted(TypedDict):
    accepted: Literal[True]


class ApprovalAccepted(TypedDict):
    accepted: Literal[True]
    runId: str
    approvedAt: str


class RetryAccepted(TypedDict):
    accepted: Literal[True]
    newRunId: str
    fromStep: Literal["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]


def _run_links(run_id: str, workflow_id: str) -> dict[str, Link]:
    """What a started run can be asked next (the stateful tests follow these)."""
    return {
        "GetRunView": Link("runs.get_run_view", {"run_id": run_id}),
        "ApprovePlan": Link("runs.approve_legacy", {"run_id": run_id}),
        "SendEvent": Link("runs.send_event", {"run_id": run_id}),
        "Retry": Link("runs.retry", {"run_id": run_id}),
        "GetRunHeader": Link("runs.get_run_header", {"workflow_id": workflow_id}),
        "GetStepRows": Link("runs.get_step_rows", {"workflow_id": workflow_id}),
        "ApprovePlanApi": Link("runs.approve_api", {"workflow_id": workflow_id}),
        "GetWorkflow": Link("ops.get_workflow", {"workflow_id": workflow_id}),
        "GetWorkflowSteps": Link("ops.get_workflow_steps", {"workflow_id": workflow_id}),
        "CancelWorkflow": Link("ops.cancel_workflow", {"workflow_id": workflow_id}),
    }


def _start(intent_id: str, req: RunRequest, *, found: bool = False) -> Row:
    """The shared tail of both starts: intent exists (unless the route `found` it already) → queue
    policy and idempotent start, in one transaction."""
    svc = service()
    if not found and svc.find_intent(intent_id) is None:
        raise NotFoundError(f"Intent not found: {intent_id}")
    return svc.start_run(intent_id, req)


# ---- legacy ---------------------------------------------------------------------------------------


@bp.post("/intents/<intent_id>/run")
@operation(
    "Start the intent's run (legacy, idempotent)",
    {202: RunStarted},
    errors=(NOT_FOUND, INTERNAL),
    body=RunRequest,
    links={202: _run_links("$response.body#/runId", "$response.body#/workflowId")},
)
def start_legacy(intent_id: str) -> Response:
    # The intent is looked up before the body is read: a missing intent with a bad body is a 404.
    if service().find_intent(intent_id) is None:
        raise NotFoundError("intent not found")
    run = _start(intent_id, body_of(RunRequest), found=True)
    return json_response({"runId": run["id"], "workflowId": run["workflow_id"]}, 202)


@bp.get("/runs/<run_id>")
@operation("RunView by run id or workflow id", {200: RunView})
def get_run_view(run_id: str) -> Response:
    with service().db.conn() as c:
        view = projections.run_view(c, run_id)
    if view is None:
        raise NotFoundError("run not found")
    return json_response(view)


@bp.post("/runs/<run_id>/approve-plan")
@operation(
    "Approve the run's plan (legacy; never a 409)",
    {202: ApprovalAccepted},
    body=PlanApprovalRequest,
    body_required=True,
)
def approve_legacy(run_id: str) -> Response:
    return _approve(run_id, empty_as_object=False)


@bp.post("/runs/<run_id>/events")
@operation(
    "Send a human event to a waiting run (409 unless it is waiting_input)",
    {202: Accepted},
    errors=(CONFLICT,),
    body=RunEvent,
    body_required=True,
)
def send_event(run_id: str) -> Response:
    run = service().get_run(run_id)
    # The status check comes before the body: an early event with a bad body is a 409.
    check_accepts_event(run)
    event = body_of(RunEvent, empty_as_object=False)
    service().send_event(run, event)
    return json_response({"accepted": True}, 202)


@bp.post("/runs/<run_id>/retry")
@operation("Repair a failed run (body ignored)", {202: RetryAccepted}, errors=(CONFLICT,))
def retry(run_id: str) -> Response:
    # The body is ignored.
    run = service().get_run(run_id)
    check_retryable(run)
    try:
        service().client.get(run["workflow_id"])
    except NotFoundError:
        # A start whose enqueue failed (contract-api §1.5 exception 1) left a `failed` run with no
        # workflow: there is nothing to repair, and a repair would fail on its missing workflow.
        raise RunStateError(
            f"cannot retry run in status {run['status']}: its workflow was never enqueued",
            run_status=run["status"],
        ) from None
    from_step = service().retry(run)
    return json_response({"accepted": True, "newRunId": run["id"], "fromStep": from_step}, 202)


# ---- data plane -----------------------------------------------------------------------------------


@bp.post("/api/runs")
@operation(
    "Start an intent's run (idempotent); intentId is read first, the rest is a RunRequest",
    {202: RunHeader},
    errors=(NOT_FOUND, INTERNAL),
    body=StartRunRequest,
    body_required=True,
    links={202: _run_links("$response.body#/workflowID", "$response.body#/workflowID")},
)
def start_api() -> Response:
    body = parse_json_body(request.get_data(), empty_as_object=False)
    if not isinstance(body, dict):
        raise ValidationError("invalid json payload")
    check_text(body, "RunRequest")  # intentId included: it is looked up before the schema runs
    fields = dict(body)
    intent_id = fields.pop("intentId", None)
    if not isinstance(intent_id, str) or intent_id == "":
        raise ValidationError("intentId required")
    run = _start(intent_id, validate(RunRequest, fields, "RunRequest"))
    # Projected from the run row only (no engine overlay): a fresh run is ENQUEUED.
    header = projections.project_run_header(run, trace_base_url=service().settings.trace_base_url)
    return json_response(header, 202)


@bp.get("/api/runs/<workflow_id>")
@operation("RunHeader", {200: RunHeader})
def get_run_header(workflow_id: str) -> Response:
    run = service().get_run(workflow_id)
    with service().db.conn() as c:
        header = projections.run_header(c, run, trace_base_url=service().settings.trace_base_url)
    return json_response(header)


@bp.get("/api/runs/<workflow_id>/steps")
@operation("StepRow[]", {200: list[StepRow]})
def get_step_rows(workflow_id: str) -> Response:
    run = service().get_run(workflow_id)
    with service().db.conn() as c:
        return json_response(projections.step_rows(c, run))


@bp.post("/api/runs/<workflow_id>/approve-plan")
@operation("Approve the run's plan", {202: ApprovalAccepted}, body=PlanApprovalRequest, body_required=True)
def approve_api(workflow_id: str) -> Response:
    return _approve(workflow_id, empty_as_object=True)


# ---- shared ---------------------------------------------------------------------------------------


def _approve(id_or_workflow_id: str, *, empty_as_object: bool) -> Response:
    """Both approve-plan routes: run lookup → parse → validate → approve. Never a 409."""
    run = service().get_run(id_or_workflow_id)
    approval = body_of(PlanApprovalRequest, empty_as_object=empty_as_object)
    approved_at = service().approve_plan(run, approval.approved_by, approval.notes)
    return json_response(
        {"accepted": True, "runId": run["id"], "approvedAt": projections.iso(approved_at)}, 202
    )
