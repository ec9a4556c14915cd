"""Proof routes of contract-api §4.10: POST /crashdemo?wf=, GET /marks?wf=."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from kodo.api.errors import json_response
from kodo.db.queries import Q
from kodo.demo.crashdemo import crash_demo
from kodo.errors import ValidationError
from kodo.runtime import Runtime

bp = Blueprint("demo", __name__)


def _runtime() -> Runtime:
    rt: Runtime = current_app.extensions["kodo.runtime"]
    return rt


def _wf_param() -> str:
    wf = request.args.get("wf", "")
    if not wf.strip():
        raise ValidationError("wf query param required")
    return wf


@bp.post("/crashdemo")
def start_crashdemo() -> Response:
    wf = _wf_param()
    rt = _runtime()
    rt.client.start(crash_demo, rt.settings.wf_sleep_ms, workflow_id=wf)
    return json_response({"accepted": True, "workflowId": wf}, 202)


@bp.get("/marks")
def marks() -> Response:
    wf = _wf_param()
    counts = {"s1": 0, "s2": 0}
    with _runtime().db.conn() as c:
        for row in c.execute(Q["count_marks"], {"run_id": wf}).fetchall():
            counts[row["step"]] = int(row["n"])
    return json_response(counts)
