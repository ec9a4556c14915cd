"""The one mapping from errors to HTTP: every status an error gets is chosen here, and nowhere else.

Routes and the intent layer raise kodo errors (`kodo.errors`); `to_http` turns each into its status
and exact body. Every error body is `{"error": <string>, ...}`: schema failures add `details`, queue
policy failures `code`, run-state conflicts the run's `status`. Unknown routes and wrong methods are
404 `{"error":"not found"}` (no 405); anything unexpected is 500 `{"error":"internal error"}` and is
logged, never shown. The database unreachable (any route: a psycopg OperationalError, a pool
timeout) is 503 `{"ok":false,"error":"database unavailable","code":"db_unavailable"}`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kodo.db.store import store_unavailable
from kodo.errors import (
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    KodoError,
    NotFoundError,
    QueuePolicyError,
    RunStateError,
    SchemaError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)

INTERNAL_ERROR: dict[str, Any] = {"error": "internal error"}

# The server's own refusals, with stable messages (werkzeug's descriptions are prose that may change).
HTTP_ERRORS: dict[int, str] = {
    413: "request body too large",
    414: "request uri too long",
    431: "request header fields too large",
}


def json_response(body: Any, status: int = 200) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Content-Type"] = "application/json"
    return resp


def to_http(exc: KodoError) -> tuple[int, dict[str, Any]]:
    """The status and body of a kodo error; 500 `internal error` for one no client should see."""
    body: dict[str, Any] = {"error": exc.message}
    # Subclasses before their bases: the first match wins.
    if isinstance(exc, SchemaError):
        return 400, {**body, "details": exc.details}
    if isinstance(exc, QueuePolicyError):
        return 400, {**body, "code": exc.code}
    if isinstance(exc, ValidationError):
        return 400, body
    if isinstance(exc, UnauthorizedError):
        return 401, body
    if isinstance(exc, ForbiddenError):
        return 403, body
    if isinstance(exc, NotFoundError):
        return 404, body
    if isinstance(exc, RunStateError):
        return 409, {**body, "status": exc.run_status}
    if isinstance(exc, ConflictError):
        return 409, body
    if isinstance(exc, DatabaseUnavailableError):
        return 503, {"ok": False, **body, "code": exc.code}
    if isinstance(exc, UnavailableError):
        return 503, {"ok": False, **body}  # the health routes' body
    return 500, dict(INTERNAL_ERROR)


def register(app: Flask) -> None:
    @app.errorhandler(KodoError)
    def _kodo_error(exc: KodoError) -> Response:
        status, body = to_http(exc)
        if status >= 500 and not isinstance(exc, UnavailableError):
            log.error("unmapped kodo error: %s", exc, exc_info=exc)
        resp = json_response(body, status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code in (404, 405):
            return json_response({"error": "not found"}, 404)
        if exc.code in HTTP_ERRORS:
            return json_response({"error": HTTP_ERRORS[exc.code]}, exc.code)
        if exc.code is not None and exc.code < 500:
            return json_response({"error": (exc.description or exc.name).lower()}, exc.code)
        return json_response(INTERNAL_ERROR, 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if store_unavailable(exc):  # an outage, not a bug: no stack trace, a stable 503
            log.warning("database unavailable: %s", exc)
            return _kodo_error(DatabaseUnavailableError("database unavailable"))
        log.error("unhandled error", exc_info=exc)
        return json_response(INTERNAL_ERROR, 500)
