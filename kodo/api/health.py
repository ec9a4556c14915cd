"""GET /healthz: the process is up and its database answers (503 `database unavailable`, code
`db_unavailable`, if not)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from kodo.api.errors import json_response
from kodo.db.pool import Database
from kodo.db.queries import Q
from kodo.errors import DatabaseUnavailableError

bp = Blueprint("health", __name__)


def ping(db: Database) -> None:
    """Raise UnavailableError unless the database answers a trivial query."""
    try:
        with db.conn() as c:
            c.execute(Q["health_ping"])
    except Exception as exc:
        raise DatabaseUnavailableError("database unavailable") from exc


@bp.get("/healthz")
def healthz() -> Response:
    ping(current_app.extensions["kodo.runtime"].db)
    return json_response({"ok": True})
