"""The admin server on ADMIN_PORT: health and a live summary of workflow states per queue."""

from __future__ import annotations

from flask import Flask, Response

from kodo.api.errors import json_response, register
from kodo.api.health import ping
from kodo.db.queries import Q
from kodo.runtime import Runtime


def create_admin_app(runtime: Runtime) -> Flask:
    app = Flask("kodo-admin")
    app.json.compact = True  # type: ignore[attr-defined]
    register(app)

    @app.get("/healthz")
    def healthz() -> Response:
        ping(runtime.db)
        return json_response({"ok": True, "appVersion": runtime.settings.app_version})

    @app.get("/queues")
    def queues() -> Response:
        with runtime.db.conn() as c:
            rows = c.execute(Q["queue_summary"]).fetchall()
        return json_response(rows)

    return app
