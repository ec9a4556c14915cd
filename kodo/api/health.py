"""GET /healthz: the process is up and its database answers (503 `database unavailable`, code
`db_unavailable`, if not)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from typing_extensions import TypedDict

from kodo.api.errors import json_response
from kodo.api.openapi import UNAVAILABLE, operation
from kodo.db.pool import Database
from kodo.db.queries import Q
from kodo.errors import DatabaseUnavailableError

bp = Blueprint("health", __name__)


class Health(TypedDict):
    ok: bool


def ping(db: Database) -> None:
    """Raise UnavailableError unless the database answers a trivial query."""
    try:
        with db.conn() as c:
            c.execute(Q["health_ping"])
    except Exception as exc:
        raise DatabaseUnavailableError("database unavailable") from exc


@bp.get("/healthz")
@operation(
    "Liveness: the process answers and so does its database",
    {200: Health},
    errors=(UNAVAILABLE,),
    tags=("health",),
)
def healthz() -> Response:
    ping(current_app.extensions["kodo.runtime"].db)
    return json_response({"ok": True})
