"""The admin server on ADMIN_PORT: health, a live summary of workflow states per queue, and the
Prometheus metrics (`/metrics`, `kodo.telemetry.metrics_registry`)."""

from __future__ import annotations

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kodo.api.errors import json_response, register
from kodo.api.health import ping
from kodo.db.queries import Q
from kodo.runtime import Runtime
from kodo.telemetry import metrics_registry


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

    registry = metrics_registry(runtime.db, runtime.settings)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app
