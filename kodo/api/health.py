"""GET /healthz: the process is up and its database answers."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from kodo.api.errors import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    runtime = current_app.extensions["kodo.runtime"]
    try:
        with runtime.db.conn() as c:
            c.execute("SELECT 1")
    except Exception:
        return json_response({"ok": False, "error": "database unavailable"}, 503)
    return json_response({"ok": True})
