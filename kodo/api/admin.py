"""The admin server on ADMIN_PORT: health, a live summary of workflow states per queue, and the
Prometheus metrics (`/metrics`, `kodo.telemetry.metrics_registry`)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kodo.api.errors import json_response, register
from kodo.api.health import ping
from kodo.db.queries import Q
from kodo.errors import ValidationError
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

    # Flow control at run time (the same as `kodo queue show|set|reset`): limits live in Postgres,
    # every process applies a change within a second.
    @app.get("/queues/limits")
    def queue_limits() -> Response:
        return json_response(runtime.show_limits())

    @app.put("/queues/<queue>/limits")
    def set_queue_limits(queue: str) -> Response:
        return json_response(runtime.set_limits(queue, None, _body()))

    @app.put("/queues/<queue>/partitions/<partition>/limits")
    def set_partition_limits(queue: str, partition: str) -> Response:
        return json_response(runtime.set_limits(queue, partition, _body()))

    @app.delete("/queues/<queue>/limits")
    def reset_queue_limits(queue: str) -> Response:
        return json_response(runtime.reset_limits(queue, None))

    @app.delete("/queues/<queue>/partitions/<partition>/limits")
    def reset_partition_limits(queue: str, partition: str) -> Response:
        return json_response(runtime.reset_limits(queue, partition))

    registry = metrics_registry(runtime.db, runtime.settings)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app


def _body() -> dict[str, Any]:
    """A JSON object of limits in camelCase (`workerConcurrency`) or snake_case."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object of limits")
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in body.items()}
