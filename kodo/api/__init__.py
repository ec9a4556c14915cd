"""The Flask API (fail-closed JSON). `create_app()` builds it from Settings; no import-time effects."""

from __future__ import annotations

from flask import Flask

from kodo.api import demo, errors, health
from kodo.config import Settings
from kodo.runtime import Runtime

RUNTIME_KEY = "kodo.runtime"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    app = Flask("kodo")
    app.json.compact = True  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[RUNTIME_KEY] = runtime or Runtime.build(settings)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(demo.bp)
    return app
