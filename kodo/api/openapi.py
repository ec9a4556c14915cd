"""`GET /openapi.json`: an OpenAPI 3.1 document of every route the app serves.

The paths come from the app's URL map, so a served route cannot be missing; the schemas come from
the pydantic models that validate requests (`kodo.intent.requests`) and the TypedDicts that check
responses (`kodo.intent.projections`). The table below adds summaries and status codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

from flask import Blueprint, Response, current_app
from pydantic import ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

import kodo
from kodo.api.errors import json_response
from kodo.intent.ops import (
    CancelWorkflowRequest,
    ForkAccepted,
    ForkWorkflowRequest,
    OpsAccepted,
    OpsWorkflowDetail,
    OpsWorkflowSummary,
    ResumeWorkflowRequest,
    WorkflowStepSummary,
)
from kodo.intent.projections import RunHeader, RunView, StepRow
from kodo.intent.requests import Intent, NonEmptyStr, PlanApprovalRequest, RunEvent, RunRequest

bp = Blueprint("openapi", __name__)


class StartRunRequest(RunRequest):
    """Body of `POST /api/runs`: a RunRequest plus the intent to run (checked first, §4.4)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="StartRunRequest")
    intent_id: NonEmptyStr = Field(alias="intentId")


# ---- response envelopes (the projections document themselves) ----------------------------------


class Health(TypedDict):
    ok: bool


class ErrorBody(TypedDict):
    """Every error: `error`, plus `details` (schema), `code` (queue policy) or `status` (409)."""

    error: str
    details: NotRequired[list[dict[str, Any]]]
    code: NotRequired[Literal["queue_policy_violation"]]
    status: NotRequired[str]


class IntentCreated(TypedDict):
    intentId: str


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


class WorkflowAccepted(TypedDict):
    accepted: Literal[True]
    workflowId: str


class SleepAccepted(TypedDict):
    accepted: Literal[True]
    workflowID: str


class Marks(TypedDict):
    s1: int
    s2: int


class OpenApiDocument(TypedDict):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


@dataclass(frozen=True)
class Op:
    """One documented operation: its request body, its responses (status -> schema, or a content map)."""

    summary: str
    responses: dict[int, Any]
    body: type[Any] | None = None
    query: tuple[str, ...] = ()  # query parameters; a trailing "?" marks one optional
    tags: tuple[str, ...] = field(default=("intent",))


_RUN_ERRORS = {404: ErrorBody}
_BODY_ERRORS = {400: ErrorBody}
_ARTIFACT_CONTENT = {
    "application/json": {"schema": {}},
    "text/plain": {"schema": {"type": "string"}},
    "image/svg+xml": {"schema": {"type": "string"}},
}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/healthz"): Op("Liveness", {200: Health}, tags=("health",)),
    ("POST", "/crashdemo"): Op(
        "Start the crash-demo workflow",
        {202: WorkflowAccepted, **_BODY_ERRORS},
        query=("wf",),
        tags=("proof",),
    ),
    ("GET", "/marks"): Op("Crash-demo marks", {200: Marks, **_BODY_ERRORS}, query=("wf",), tags=("proof",)),
    ("POST", "/slowstep"): Op(
        "Start the slow-step workflow (step1, durable sleep of `sleep` ms, default 5000, step2)",
        {202: WorkflowAccepted, **_BODY_ERRORS},
        query=("wf", "sleep?"),
        tags=("proof",),
    ),
    ("GET", "/slowmarks"): Op(
        "Slow-step marks", {200: Marks, **_BODY_ERRORS}, query=("wf",), tags=("proof",)
    ),
    ("POST", "/api/ops/sleep"): Op(
        "Start a durable sleep (TimeWorkflow.sleepWorkflow): wf = workflow and run id, sleep = ms "
        "(1..86400000, default 5000); validated first, a 400 writes nothing; 409 if wf is another's",
        {202: SleepAccepted, **_BODY_ERRORS, 409: ErrorBody},
        query=("wf", "sleep?"),
        tags=("time",),
    ),
    ("POST", "/intents"): Op("Create an intent (legacy)", {201: IntentCreated, **_BODY_ERRORS}, Intent),
    ("POST", "/api/intents"): Op("Create an intent", {201: IntentCreated, **_BODY_ERRORS}, Intent),
    ("POST", "/intents/{intent_id}/run"): Op(
        "Start the intent's run (legacy, idempotent)",
        {202: RunStarted, **_BODY_ERRORS, 404: ErrorBody, 500: ErrorBody},
        RunRequest,
    ),
    ("GET", "/runs/{run_id}"): Op("RunView by run id or workflow id", {200: RunView, **_RUN_ERRORS}),
    ("POST", "/runs/{run_id}/approve-plan"): Op(
        "Approve the run's plan (legacy)",
        {202: ApprovalAccepted, **_BODY_ERRORS, **_RUN_ERRORS},
        PlanApprovalRequest,
    ),
    ("POST", "/runs/{run_id}/events"): Op(
        "Send a human event to a waiting run",
        {202: Accepted, **_BODY_ERRORS, **_RUN_ERRORS, 409: ErrorBody},
        RunEvent,
    ),
    ("POST", "/runs/{run_id}/retry"): Op(
        "Repair a failed run (body ignored)", {202: RetryAccepted, **_RUN_ERRORS, 409: ErrorBody}
    ),
    ("POST", "/api/runs"): Op(
        "Start an intent's run (idempotent)",
        {202: RunHeader, **_BODY_ERRORS, 404: ErrorBody, 500: ErrorBody},
        StartRunRequest,
    ),
    ("GET", "/api/runs/{workflow_id}"): Op("RunHeader", {200: RunHeader, **_RUN_ERRORS}),
    ("GET", "/api/runs/{workflow_id}/steps"): Op("StepRow[]", {200: list[StepRow], **_RUN_ERRORS}),
    ("POST", "/api/runs/{workflow_id}/approve-plan"): Op(
        "Approve the run's plan", {202: ApprovalAccepted, **_BODY_ERRORS, **_RUN_ERRORS}, PlanApprovalRequest
    ),
    ("GET", "/api/artifacts/{artifact_id}"): Op(
        "Artifact content by URL-encoded URI", {200: _ARTIFACT_CONTENT, 404: ErrorBody}
    ),
    # The ops plane (§9): exactly these six routes under /api/ops/wf.
    ("GET", "/api/ops/wf"): Op(
        "Engine workflows, newest first (limit 1-200, default 20; unknown keys are a 400)",
        {200: list[OpsWorkflowSummary], **_BODY_ERRORS},
        query=("status?", "name?", "limit?"),
        tags=("ops",),
    ),
    ("GET", "/api/ops/wf/{workflow_id}"): Op(
        "One workflow and its audit trail (newest first)",
        {200: OpsWorkflowDetail, 404: ErrorBody},
        tags=("ops",),
    ),
    ("GET", "/api/ops/wf/{workflow_id}/steps"): Op(
        "Its recorded operations (functionId from 0)",
        {200: list[WorkflowStepSummary], 404: ErrorBody},
        tags=("ops",),
    ),
    ("POST", "/api/ops/wf/{workflow_id}/cancel"): Op(
        "Cancel (from PENDING or ENQUEUED; stops at the next step boundary), audited",
        {202: OpsAccepted, **_BODY_ERRORS, 404: ErrorBody, 409: ErrorBody},
        CancelWorkflowRequest,
        tags=("ops",),
    ),
    ("POST", "/api/ops/wf/{workflow_id}/resume"): Op(
        "Resume the same id from its checkpoints (from CANCELLED or ENQUEUED), audited",
        {202: OpsAccepted, **_BODY_ERRORS, 404: ErrorBody, 409: ErrorBody},
        ResumeWorkflowRequest,
        tags=("ops",),
    ),
    ("POST", "/api/ops/wf/{workflow_id}/fork"): Op(
        "Fork: a new id reusing the operations before stepN (409 past the last one), audited",
        {202: ForkAccepted, **_BODY_ERRORS, 404: ErrorBody, 409: ErrorBody},
        ForkWorkflowRequest,
        tags=("ops",),
    ),
    ("GET", "/openapi.json"): Op("This document", {200: OpenApiDocument}, tags=("meta",)),
}

_REF = "#/components/schemas/{model}"
_ARG = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def _path(rule: str) -> str:
    return _ARG.sub(r"{\1}", rule)


def _schema_types() -> list[Any]:
    seen: list[Any] = []
    for op in OPERATIONS.values():
        for t in [op.body, *op.responses.values()]:
            if t is not None and not isinstance(t, dict) and t not in seen:
                seen.append(t)
    return seen


def _schemas() -> tuple[dict[Any, Any], dict[str, Any]]:
    """JSON Schemas of every documented type: (type -> schema or $ref, named component schemas)."""
    types = _schema_types()
    mode = {t: "validation" if t in {o.body for o in OPERATIONS.values()} else "serialization" for t in types}
    keyed, defs = TypeAdapter.json_schemas(
        [(i, mode[t], TypeAdapter(t)) for i, t in enumerate(types)],  # type: ignore[misc]
        ref_template=_REF,
    )
    by_type = {t: keyed[(i, mode[t])] for i, t in enumerate(types)}  # type: ignore[index]
    return by_type, defs.get("$defs", {})


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    method: str, path: str, args: list[str], endpoint: str, by_type: dict[Any, Any]
) -> dict[str, Any]:
    op = OPERATIONS.get((method, path))
    params = [{"name": a, "in": "path", "required": True, "schema": {"type": "string"}} for a in args]
    if op is None:  # a route nobody described yet: listed, with the bare minimum
        return {
            "operationId": f"{method.lower()}_{endpoint.replace('.', '_')}",
            "parameters": params,
            "responses": {"default": {"description": "see contract-api.md"}},
        }
    params += [
        {"name": q.rstrip("?"), "in": "query", "required": not q.endswith("?"), "schema": {"type": "string"}}
        for q in op.query
    ]
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{endpoint.replace('.', '_')}",
        "summary": op.summary,
        "tags": list(op.tags),
    }
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": False, "content": _json(by_type[op.body])}
    out["responses"] = {
        str(status): {
            "description": "error" if status >= 400 else "ok",
            "content": schema if isinstance(schema, dict) else _json(by_type[schema]),
        }
        for status, schema in op.responses.items()
    }
    return out


def document() -> dict[str, Any]:
    """The OpenAPI document of the current app."""
    by_type, defs = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        path = _path(rule.rule)
        args = _ARG.findall(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                method, path, args, rule.endpoint, by_type
            )
    return {
        "openapi": "3.1.0",
        "info": {"title": "kodo", "version": kodo.__version__},
        "paths": paths,
        "components": {"schemas": defs},
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return json_response(document())
