"""Optional bearer tokens (KODO_API_TOKENS): who may write through the API.

Off by default. With tokens configured, every mutating data-plane route (POST, PUT, PATCH, DELETE on
`/intents...`, `/runs...`, `/api/...`) and every ops route (`/api/ops/...`, reads included) needs
`Authorization: Bearer <token>`: without one, or with a malformed header, 401 `unauthorized`; with a
token nobody was given, 403 `forbidden` (`kodo.api.errors` maps both). The check runs before any
other (parameters, body), so a refused request reads nothing and writes nothing. Other reads
(`GET /runs/...`, `GET /api/runs/...`, artifacts, marks, health, `/openapi.json`) and the proof routes
(`/crashdemo`, `/slowstep`) stay open. The token's name is the request's principal: the actor of the
ops audit rows. `protected` is the one rule; `/openapi.json` applies `security` with it.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, g, request

from kodo.errors import ForbiddenError, UnauthorizedError

SCHEME = "bearerAuth"
DESCRIPTION = (
    "With KODO_API_TOKENS set, writes under /intents, /runs and /api, and every /api/ops route, need "
    "`Authorization: Bearer <token>` (401 `unauthorized` without, 403 `forbidden` for an unknown "
    "token); other reads stay open. Off by default."
)
TOKENS_KEY = "kodo.api_tokens"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DATA_PLANE = ("/intents", "/runs", "/api/")


def protected(method: str, path: str) -> bool:
    """Whether `method path` (a route rule, or a concrete path) needs a token when tokens are on."""
    if path.startswith("/api/ops/") or path == "/api/ops":
        return True
    return method.upper() in _WRITES and path.startswith(_DATA_PLANE)


def enabled(app: Flask) -> bool:
    return bool(app.extensions.get(TOKENS_KEY))


def principal() -> str | None:
    """The name of the request's token (None when tokens are off or the route is open)."""
    name: str | None = g.get("kodo_principal")
    return name


def _name_of(token: str) -> str | None:
    found = None
    for name, known in current_app.extensions[TOKENS_KEY]:
        # Every token is compared, in constant time each: no early exit tells which one was close.
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), known.encode("utf-8")):
            found = name
    return found


def check() -> None:
    """The `before_request` check (registered first): 401/403 for a protected route without a
    known token; records the principal."""
    if not enabled(current_app) or request.url_rule is None:
        return  # off, or no route (404): nothing to protect
    if not protected(request.method, request.url_rule.rule):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise UnauthorizedError("unauthorized")
    name = _name_of(token)
    if name is None:
        raise ForbiddenError("forbidden")
    g.kodo_principal = name


def install(app: Flask, tokens: tuple[tuple[str, str], ...]) -> None:
    app.extensions[TOKENS_KEY] = tokens
    app.before_request(check)
