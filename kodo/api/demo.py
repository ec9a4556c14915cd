"""Proof routes of contract-api §4.10: POST /crashdemo?wf=, GET /marks?wf=, POST /slowstep?wf=&sleep=,
GET /slowmarks?wf=. Their query is checked before anything is written (a 400 writes nothing)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from kodo.api.errors import json_response
from kodo.api.openapi import Link, current_operation, operation
from kodo.api.ops import workflow_links
from kodo.db.queries import Q
from kodo.demo.crashdemo import crash_demo
from kodo.demo.slowstep import slow_step
from kodo.errors import ValidationError
from kodo.intent.requests import NON_BLANK_TEXT_PATTERN
from kodo.runtime import Runtime

bp = Blueprint("demo", __name__)

SLOWSTEP_DEFAULT_MS = 5000
SLOWSTEP_MAX_MS = 86_400_000  # a day
WF_REQUIRED = "wf query param required"
SLEEP_INVALID = f"sleep query param must be whole milliseconds (0..{SLOWSTEP_MAX_MS})"

WfParam = Annotated[str, Field(min_length=1, pattern=NON_BLANK_TEXT_PATTERN, description="workflow id")]


class ProofQuery(BaseModel):
    """The query of the proof routes: `wf`, not blank (400 `wf query param required`). Other keys
    are ignored; a repeated key counts once (its first value)."""

    model_config = ConfigDict(extra="ignore", strict=True, title="ProofQuery")

    wf: WfParam


class SlowStepQuery(ProofQuery):
    """`POST /slowstep`: `wf`, and `sleep` in whole milliseconds, 0..86400000, default 5000."""

    model_config = ConfigDict(extra="ignore", strict=True, title="SlowStepQuery")

    sleep: Annotated[int, Field(ge=0, le=SLOWSTEP_MAX_MS)] = SLOWSTEP_DEFAULT_MS


Q_ = TypeVar("Q_", bound=ProofQuery)


class WorkflowAccepted(TypedDict):
    accepted: Literal[True]
    workflowId: str


class Marks(TypedDict):
    s1: int
    s2: int


def _runtime() -> Runtime:
    rt: Runtime = current_app.extensions["kodo.runtime"]
    return rt


def _query(model: type[Q_]) -> Q_:
    """The query validated against the operation's query model (the document shows that one), with
    the contract's messages: a bad `wf` is `wf query param required`, a bad `sleep` SLEEP_INVALID."""
    if current_operation().query is not model:
        raise LookupError(f"route {request.endpoint} does not document {model.__name__}")
    query: dict[str, Any] = {key: request.args.get(key) for key in request.args}
    sleep = query.get("sleep")
    if isinstance(sleep, str) and sleep.strip().isascii() and sleep.strip().isdigit():
        query["sleep"] = int(sleep.strip())  # whole milliseconds; anything else fails as not an integer
    try:
        return model.model_validate(query)
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]["loc"][0]
        raise ValidationError(WF_REQUIRED if first == "wf" else SLEEP_INVALID) from None


def _marks_link(operation_name: str) -> dict[str, Link]:
    return {"Marks": Link(operation_name, {"wf": "$response.body#/workflowId"})}


_TAGS = ("proof",)


@bp.post("/crashdemo")
@operation(
    "Start the crash-demo workflow (idempotent by id)",
    {202: WorkflowAccepted},
    query=ProofQuery,
    tags=_TAGS,
    links={202: {**_marks_link("demo.marks"), **workflow_links("$response.body#/workflowId")}},
)
def start_crashdemo() -> Response:
    wf = _query(ProofQuery).wf
    rt = _runtime()
    rt.client.start(crash_demo, rt.settings.wf_sleep_ms, workflow_id=wf)
    return json_response({"accepted": True, "workflowId": wf}, 202)


def _marks(wf: str) -> Response:
    counts = {"s1": 0, "s2": 0}
    with _runtime().db.conn() as c:
        for row in c.execute(Q["count_marks"], {"run_id": wf}).fetchall():
            counts[row["step"]] = int(row["n"])
    return json_response(counts)


@bp.get("/marks")
@operation("Crash-demo marks", {200: Marks}, query=ProofQuery, tags=_TAGS)
def marks() -> Response:
    return _marks(_query(ProofQuery).wf)


@bp.post("/slowstep")
@operation(
    "Start the slow-step workflow (step1, durable sleep of `sleep` ms, step2; idempotent by id)",
    {202: WorkflowAccepted},
    query=SlowStepQuery,
    tags=_TAGS,
    links={202: {**_marks_link("demo.slowmarks"), **workflow_links("$response.body#/workflowId")}},
)
def start_slowstep() -> Response:
    query = _query(SlowStepQuery)
    # Idempotent by id, like /crashdemo: an existing workflow `wf` is left as it is.
    _runtime().client.start(slow_step, query.wf, query.sleep, workflow_id=query.wf)
    return json_response({"accepted": True, "workflowId": query.wf}, 202)


@bp.get("/slowmarks")
@operation("Slow-step marks", {200: Marks}, query=ProofQuery, tags=_TAGS)
def slowmarks() -> Response:
    return _marks(_query(ProofQuery).wf)
