"""The one mapping from errors to HTTP: every error is `{"error": <string>, ...}` with a fixed status.

Unknown routes and wrong methods are 404 `{"error":"not found"}` (no 405); anything unexpected is
500 `{"error":"internal error"}` and is logged, never shown.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kodo.errors import ConflictError, KodoError, NotFoundError, ValidationError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with an exact body, raised by handlers after validation fails."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}


def bad_request(error: str, **extra: Any) -> ApiError:
    return ApiError(400, error, **extra)


def json_response(body: Any, status: int = 200) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Content-Type"] = "application/json"
    return resp


_KODO_STATUS: dict[type[KodoError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ValidationError: 400,
}


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.body, exc.status)

    @app.errorhandler(KodoError)
    def _kodo_error(exc: KodoError) -> Response:
        for cls, status in _KODO_STATUS.items():
            if isinstance(exc, cls):
                return json_response({"error": exc.message}, status)
        log.error("unmapped kodo error: %s", exc, exc_info=exc)
        return json_response({"error": "internal error"}, 500)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code in (404, 405):
            return json_response({"error": "not found"}, 404)
        if exc.code is not None and exc.code < 500:
            return json_response({"error": (exc.description or exc.name).lower()}, exc.code)
        return json_response({"error": "internal error"}, 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return json_response({"error": "internal error"}, 500)
