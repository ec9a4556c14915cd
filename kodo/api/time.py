"""`POST /api/ops/sleep?wf=<id>&sleep=<ms>` (contract-api §2 row 24, §4.10; the HEAD validation).

The query is checked first, as the schema `SleepWorkflowRequest` (`wf`: 1-128 characters of
`[A-Za-z0-9._:-]`, not starting with a punctuation mark; `sleep`: an integer of 1..86400000 ms, default
5000; no other key, each key once): a rejected request is a 400 and writes nothing. Then the sleep's
intent, run and workflow rows commit in one transaction (`kodo.intent.timewf.start_sleep`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from flask import Blueprint, Response, current_app, request
from typing_extensions import TypedDict

from kodo.api.errors import json_response
from kodo.api.openapi import CONFLICT, operation
from kodo.api.ops import workflow_links
from kodo.api.schemas import validate
from kodo.intent import timewf
from kodo.runtime import Runtime

bp = Blueprint("time", __name__)

_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _query() -> dict[str, Any]:
    """The query as the schema sees it: one value per key (a repeated key stays a list and fails its
    type), and `sleep` an integer when it is written as one (else it fails `must be integer`)."""
    query: dict[str, Any] = {}
    for key, values in request.args.lists():
        query[key] = values[0] if len(values) == 1 else values
    sleep = query.get("sleep")
    if isinstance(sleep, str) and _INTEGER.fullmatch(sleep):
        query["sleep"] = int(sleep)
    return query


class SleepAccepted(TypedDict):
    accepted: Literal[True]
    workflowID: str


@bp.post("/api/ops/sleep")
@operation(
    "Start a durable sleep (TimeWorkflow.sleepWorkflow): wf = workflow and run id, sleep = ms; "
    "validated first, a 400 writes nothing; 409 if wf is another's",
    {202: SleepAccepted},
    errors=(CONFLICT,),
    query=timewf.SleepWorkflowRequest,
    tags=("time",),
    links={202: workflow_links("$response.body#/workflowID")},
)
def start_sleep() -> Response:
    req = validate(timewf.SleepWorkflowRequest, _query(), "SleepWorkflowRequest")
    rt: Runtime = current_app.extensions["kodo.runtime"]
    timewf.start_sleep(rt, req.wf, req.sleep)
    return json_response({"accepted": True, "workflowID": req.wf}, 202)
