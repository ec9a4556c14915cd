"""The Flask API (fail-closed JSON). `create_app()` builds it from Settings; no import-time effects."""

from __future__ import annotations

from flask import Flask, request

from kodo import telemetry
from kodo.api import artifacts, auth, demo, errors, health, intents, openapi, ops, runs, stream, time, webui
from kodo.api.schemas import check_params
from kodo.config import Settings
from kodo.intent.service import IntentService
from kodo.runtime import Runtime

RUNTIME_KEY = "kodo.runtime"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    app = Flask("kodo")
    app.json.compact = True  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # UTF-8 as the original wrote it
    # Routing as the contract's (§1.1): no automatic OPTIONS (a wrong method is a 404), and no
    # slash merging (an artifact id is a URI such as `artifact://run/...`). Set before any route.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    rt = runtime or Runtime.build(settings)
    # A larger body is a 413 JSON error before any route reads it (kodo.api.errors).
    app.config["MAX_CONTENT_LENGTH"] = rt.settings.max_body_bytes
    app.extensions[RUNTIME_KEY] = rt
    app.extensions[intents.SERVICE_KEY] = IntentService(rt)
    errors.register(app)
    # Bearer tokens first (KODO_API_TOKENS; off by default): a refused request reads nothing else.
    auth.install(app, rt.settings.api_tokens)

    @app.before_request
    def _check_params() -> None:
        # Every path id and query value, once for all routes: no NUL / lone surrogate reaches SQL.
        check_params(request.view_args, dict(request.args.lists()))

    telemetry.instrument_flask(app, rt.settings)  # request spans, when tracing is configured
    for module in (health, demo, intents, runs, stream, artifacts, ops, time, openapi, webui):
        app.register_blueprint(module.bp)
    return app
