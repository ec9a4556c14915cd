"""`GET /api/artifacts/<uri>` (contract-api §4.9): one artifact's content, typed by its kind.

The id is the artifact URI, URL-encoded by the client and decoded once by the WSGI server (the
route matches across `/`, and the app does not merge slashes, so `artifact://…` survives).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

from kodo.api.intents import service
from kodo.api.openapi import operation
from kodo.db.queries import Q
from kodo.errors import NotFoundError
from kodo.intent.projections import iso, js_truthy

bp = Blueprint("artifacts", __name__)

JSON_KINDS = frozenset({"json", "raw", "timings", "artifact_index", "question_card"})
TEXT_KINDS = frozenset({"text", "stdout", "stderr", "none", "file"})


def content_type(kind: str) -> str:
    if kind in JSON_KINDS:
        return "application/json"
    if kind == "svg":
        return "image/svg+xml"
    return "text/plain"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render(kind: str, inline: Any) -> str:
    """The body for a present inline value: unwrap `{json}`/`{text}` wrappers as the original did."""
    if kind in JSON_KINDS:
        value = inline
        if isinstance(inline, dict):
            value = inline["json"] if "json" in inline else inline.get("text", inline)
        return value if isinstance(value, str) else _pretty(value)
    if kind in TEXT_KINDS:
        if isinstance(inline, dict) and "text" in inline:
            text = inline["text"]
            return text if isinstance(text, str) else _pretty(text)
        return inline if isinstance(inline, str) else _pretty(inline)
    return inline if isinstance(inline, str) else _compact(inline)


_CONTENT = {
    "application/json": {"schema": {}},
    "text/plain": {"schema": {"type": "string"}},
    "image/svg+xml": {"schema": {"type": "string"}},
}


@bp.get("/api/artifacts/<path:artifact_id>")
@operation("Artifact content by URL-encoded URI (typed by its kind)", {200: _CONTENT})
def get_artifact(artifact_id: str) -> Response:
    with service().db.conn() as c:
        art = c.execute(Q["api_artifact_by_uri"], {"uri": artifact_id}).fetchone()
    if art is None:
        raise NotFoundError("artifact not found")
    # The original tested `if (artifact.inline)`: null, false, 0 and "" fall back to the row.
    if js_truthy(art["inline"]):
        body, ctype = render(art["kind"], art["inline"]), content_type(art["kind"])
    else:
        # No content: the row itself, as JSON (the recommended resolution of contract-api §12).
        body, ctype = _compact({**art, "created_at": iso(art["created_at"])}), "application/json"
    resp = Response(body.encode("utf-8"), status=200)
    resp.headers["Content-Type"] = ctype
    return resp
