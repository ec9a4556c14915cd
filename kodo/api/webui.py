"""The operator web UI (issue 11): a small single-page app served at `/` (`/?wid=<workflow id>`).

Plain JavaScript and CSS from `kodo/api/ui/` (no build step, nothing fetched from elsewhere): the
page itself, its scripts and its stylesheet, each under a fixed name. The page works through the
API's own routes (start, approve, events, retry, artifacts, the ops plane) plus the read-only JSON
routes here, which the contract has no equivalent for:

* `GET /api/ui/runs`: the newest runs with their goal (the run list);
* `GET /api/ui/runs/<wid>/timeline`: every step attempt and every fan-out sandbox task of a run,
  with the times its Gantt chart draws (queue wait and run time per task);
* `GET /api/ui/queues`: queue depth per queue and partition key (ENQUEUED and PENDING workflows),
  what the admin server's `/queues` shows on ADMIN_PORT, here on the API's port.

All reads: no token needed when KODO_API_TOKENS is on (kodo.api.auth protects writes and /api/ops).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Blueprint, Response, request

from kodo.api.errors import json_response
from kodo.api.intents import service
from kodo.api.openapi import operation
from kodo.api.schemas import validate
from kodo.errors import NotFoundError
from kodo.intent import ui
from kodo.intent.ui import QueueDepth, RecentRunsQuery, RunSummary, Timeline

bp = Blueprint("webui", __name__)

ASSET_DIR = Path(__file__).resolve().parent / "ui"
# The files the page loads, and their types: nothing else under the directory is served.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_TAGS = ("ui",)
_HTML = {"text/html": {"schema": {"type": "string"}}}
_ASSET = {
    "text/javascript": {"schema": {"type": "string"}},
    "text/css": {"schema": {"type": "string"}},
}


@cache
def _read(name: str) -> bytes:
    return (ASSET_DIR / name).read_bytes()


def _file(name: str, content_type: str) -> Response:
    resp = Response(_read(name), status=200)
    resp.headers["Content-Type"] = content_type
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/")
@operation("The operator UI (`/?wid=<workflow id>` opens a run)", {200: _HTML}, tags=_TAGS)
def index() -> Response:
    return _file("index.html", "text/html; charset=utf-8")


@bp.get("/ui/<name>")
@operation("A script or stylesheet of the operator UI", {200: _ASSET}, tags=_TAGS)
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFoundError("not found")
    return _file(name, ASSETS[name])


def _query() -> dict[str, object]:
    """The query as the schema sees it: `limit` read as an integer when it is one, a repeated key a list."""
    out: dict[str, object] = {}
    for key, values in request.args.lists():
        value: object = values[0] if len(values) == 1 else values
        if key == "limit" and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        out[key] = value
    return out


@bp.get("/api/ui/runs")
@operation(
    "The newest runs with their goal (limit 1-200, default 50)",
    {200: list[RunSummary]},
    query=RecentRunsQuery,
    tags=_TAGS,
)
def recent_runs() -> Response:
    query = validate(RecentRunsQuery, _query(), "RecentRunsQuery")
    with service().db.conn() as c:
        return json_response(ui.recent_runs(c, query))


@bp.get("/api/ui/runs/<workflow_id>/timeline")
@operation("A run's step attempts and sandbox tasks with their times (epoch ms)", {200: Timeline}, tags=_TAGS)
def run_timeline(workflow_id: str) -> Response:
    run = service().get_run(workflow_id)
    with service().db.conn() as c:
        return json_response(ui.timeline(c, run))


@bp.get("/api/ui/queues")
@operation("Queue depth per queue and partition key", {200: list[QueueDepth]}, tags=_TAGS)
def queues() -> Response:
    with service().db.conn() as c:
        return json_response(ui.queue_depth(c))
