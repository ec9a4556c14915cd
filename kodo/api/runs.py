"""Run routes: legacy `/intents/:id/run` and `/runs/:id*`, data-plane `/api/runs*` (contract-api §4.3-4.8).

Each handler runs the contract's checks in the contract's order and writes nothing before the
last check passed. Legacy bodies say `workflowId`, the /api ones `workflowID`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from kodo.api.errors import json_response
from kodo.api.intents import service
from kodo.api.schemas import check_text, parse_json_body, validate
from kodo.errors import NotFoundError, RunStateError, ValidationError
from kodo.intent import projections
from kodo.intent.requests import PlanApprovalRequest, RunEvent, RunRequest
from kodo.intent.service import check_accepts_event, check_retryable

bp = Blueprint("runs", __name__)

Row = dict[str, Any]


def _start(intent_id: str, body: object) -> Row:
    """The shared tail of both starts: schema → intent exists → queue policy → idempotent start."""
    req = validate(RunRequest, body, "RunRequest")
    svc = service()
    if svc.find_intent(intent_id) is None:
        raise NotFoundError(f"Intent not found: {intent_id}")
    return svc.start_run(intent_id, req, svc.queue_policy(req))


# ---- legacy ---------------------------------------------------------------------------------------


@bp.post("/intents/<intent_id>/run")
def start_legacy(intent_id: str) -> Response:
    # The intent is looked up before the body is read: a missing intent with a bad body is a 404.
    if service().find_intent(intent_id) is None:
        raise NotFoundError("intent not found")
    run = _start(intent_id, parse_json_body(request.get_data()))
    return json_response({"runId": run["id"], "workflowId": run["workflow_id"]}, 202)


@bp.get("/runs/<run_id>")
def get_run_view(run_id: str) -> Response:
    run = service().get_run(run_id)
    with service().db.conn() as c:
        return json_response(projections.run_view(c, run))


@bp.post("/runs/<run_id>/approve-plan")
def approve_legacy(run_id: str) -> Response:
    return _approve(run_id, empty_as_object=False)


@bp.post("/runs/<run_id>/events")
def send_event(run_id: str) -> Response:
    run = service().get_run(run_id)
    # The status check comes before the body: an early event with a bad body is a 409.
    check_accepts_event(run)
    event = validate(RunEvent, parse_json_body(request.get_data(), empty_as_object=False), "RunEvent")
    service().send_event(run, event)
    return json_response({"accepted": True}, 202)


@bp.post("/runs/<run_id>/retry")
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
def start_api() -> Response:
    body = parse_json_body(request.get_data(), empty_as_object=False)
    if not isinstance(body, dict):
        raise ValidationError("invalid json payload")
    check_text(body, "RunRequest")  # intentId included: it is looked up before the schema runs
    fields = dict(body)
    intent_id = fields.pop("intentId", None)
    if not isinstance(intent_id, str) or intent_id == "":
        raise ValidationError("intentId required")
    run = _start(intent_id, fields)
    # Projected from the run row only (no engine overlay): a fresh run is ENQUEUED.
    header = projections.project_run_header(run, trace_base_url=service().settings.trace_base_url)
    return json_response(header, 202)


@bp.get("/api/runs/<workflow_id>")
def get_run_header(workflow_id: str) -> Response:
    run = service().get_run(workflow_id)
    with service().db.conn() as c:
        header = projections.run_header(c, run, trace_base_url=service().settings.trace_base_url)
    return json_response(header)


@bp.get("/api/runs/<workflow_id>/steps")
def get_step_rows(workflow_id: str) -> Response:
    run = service().get_run(workflow_id)
    with service().db.conn() as c:
        return json_response(projections.step_rows(c, run))


@bp.post("/api/runs/<workflow_id>/approve-plan")
def approve_api(workflow_id: str) -> Response:
    return _approve(workflow_id, empty_as_object=True)


# ---- shared ---------------------------------------------------------------------------------------


def _approve(id_or_workflow_id: str, *, empty_as_object: bool) -> Response:
    """Both approve-plan routes: run lookup → parse → validate → approve. Never a 409."""
    run = service().get_run(id_or_workflow_id)
    body = parse_json_body(request.get_data(), empty_as_object=empty_as_object)
    approval = validate(PlanApprovalRequest, body, "PlanApprovalRequest")
    approved_at = service().approve_plan(run, approval.approved_by, approval.notes)
    return json_response(
        {"accepted": True, "runId": run["id"], "approvedAt": projections.iso(approved_at)}, 202
    )
