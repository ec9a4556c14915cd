"""Proof routes of contract-api §4.10: POST /crashdemo?wf=, GET /marks?wf=, POST /slowstep?wf=&sleep=,
GET /slowmarks?wf=. Their query is checked before anything is written (a 400 writes nothing)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from kodo.api.errors import json_response
from kodo.db.queries import Q
from kodo.demo.crashdemo import crash_demo
from kodo.demo.slowstep import slow_step
from kodo.errors import ValidationError
from kodo.runtime import Runtime

bp = Blueprint("demo", __name__)

SLOWSTEP_DEFAULT_MS = 5000
SLOWSTEP_MAX_MS = 86_400_000  # a day


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


def _marks(wf: str) -> Response:
    counts = {"s1": 0, "s2": 0}
    with _runtime().db.conn() as c:
        for row in c.execute(Q["count_marks"], {"run_id": wf}).fetchall():
            counts[row["step"]] = int(row["n"])
    return json_response(counts)


@bp.get("/marks")
def marks() -> Response:
    return _marks(_wf_param())


def _sleep_param() -> int:
    """`sleep`: whole milliseconds, 0..86400000; absent means 5000 (the runbook's value)."""
    raw = request.args.get("sleep")
    if raw is None:
        return SLOWSTEP_DEFAULT_MS
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > SLOWSTEP_MAX_MS:
        raise ValidationError(f"sleep query param must be whole milliseconds (0..{SLOWSTEP_MAX_MS})")
    return int(text)


@bp.post("/slowstep")
def start_slowstep() -> Response:
    wf = _wf_param()
    sleep_ms = _sleep_param()
    # Idempotent by id, like /crashdemo: an existing workflow `wf` is left as it is.
    _runtime().client.start(slow_step, wf, sleep_ms, workflow_id=wf)
    return json_response({"accepted": True, "workflowId": wf}, 202)


@bp.get("/slowmarks")
def slowmarks() -> Response:
    return _marks(_wf_param())
