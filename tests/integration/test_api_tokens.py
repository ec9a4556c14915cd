"""Optional bearer tokens (KODO_API_TOKENS, issue 8): off by default; when set, writes under /intents,
/runs and /api, and every /api/ops route, need `Authorization: Bearer <token>` (401 `unauthorized`
without, 403 `forbidden` for an unknown token); the token's name is the actor of ops audit rows;
other reads stay open; a refused request writes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.runtime import Runtime
from tests.support.api import INTENT, KEY, Sql, body, create_intent, fingerprint, start_run

ALICE = "alice-token-0123456789"
BOB = "bob-token-abcdefghijklmnop"


def _client(tokens: str | None) -> FlaskClient:
    env = dict(os.environ)
    if tokens is not None:
        env["KODO_API_TOKENS"] = tokens
    return create_app(runtime=Runtime.build(Settings.from_env(env))).test_client()


@pytest.fixture
def http(version: str) -> FlaskClient:
    return _client(f"alice:{ALICE},bob:{BOB}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_off_by_default(version: str) -> None:
    assert Settings.from_env(dict(os.environ)).api_tokens == ()
    http = _client(None)
    intent = create_intent(http)
    assert start_run(http, intent)["workflowId"] == intent
    assert http.get("/api/ops/wf?limit=1").status_code == 200
    doc = body(http.get("/openapi.json"))
    assert all("security" not in op for ops in doc["paths"].values() for op in ops.values())


@pytest.mark.parametrize(
    "value",
    [
        "alice",  # no token
        "alice:",  # empty token
        "alice:short",  # under 16 characters
        ":" + ALICE,  # no name
        "al ice:" + ALICE,  # a name with a blank
        f"alice:{ALICE},alice:{BOB}",  # a name twice
        f"alice:{ALICE},bob:{ALICE}",  # a token twice
        "alice:with space 0123456789",
    ],
)
def test_an_invalid_value_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="invalid KODO_API_TOKENS") as info:
        Settings.from_env({"KODO_API_TOKENS": value})
    assert ALICE not in str(info.value) and BOB not in str(info.value)  # a token is never printed


def test_a_valid_value_is_parsed_once() -> None:
    settings = Settings.from_env({"KODO_API_TOKENS": f" alice:{ALICE} , bob:{BOB} "})
    assert settings.api_tokens == (("alice", ALICE), ("bob", BOB))
    assert ALICE not in repr(settings)


PROTECTED: list[tuple[str, str, Any]] = [
    ("POST", "/intents", INTENT),
    ("POST", "/api/intents", INTENT),
    ("POST", "/api/runs", {"intentId": "it_x", **KEY}),
    ("POST", "/intents/it_x/run", KEY),
    ("POST", "/runs/run_x/approve-plan", {"approvedBy": "me"}),
    ("POST", "/runs/run_x/events", {"type": "t", "payload": {}}),
    ("POST", "/runs/run_x/retry", {}),
    ("POST", "/api/runs/it_x/approve-plan", {"approvedBy": "me"}),
    ("GET", "/api/ops/wf", None),
    ("GET", "/api/ops/wf/x", None),
    ("GET", "/api/ops/wf/x/steps", None),
    ("POST", "/api/ops/wf/x/cancel", {}),
    ("POST", "/api/ops/wf/x/resume", {}),
    ("POST", "/api/ops/wf/x/fork", {"stepN": 1}),
    ("POST", "/api/ops/sleep?wf=tok-sleep", None),
]


@pytest.mark.parametrize(("method", "url", "payload"), PROTECTED)
def test_protected_routes_refuse_without_a_known_token(
    http: FlaskClient, sql: Sql, method: str, url: str, payload: Any
) -> None:
    import json

    data = "" if payload is None else json.dumps(payload)
    cases = [
        ({}, 401, "unauthorized"),
        ({"Authorization": ALICE}, 401, "unauthorized"),  # no scheme
        ({"Authorization": "Basic " + ALICE}, 401, "unauthorized"),
        ({"Authorization": "Bearer "}, 401, "unauthorized"),
        ({"Authorization": "Bearer a b"}, 401, "unauthorized"),
        (_bearer("nobody-0123456789abcdef"), 403, "forbidden"),
        (_bearer(ALICE + "x"), 403, "forbidden"),
    ]
    for headers, status, error in cases:
        before = fingerprint(sql)
        r = http.open(url, method=method, data=data, headers=headers)
        assert (r.status_code, r.json) == (status, {"error": error}), (headers, r.get_data(as_text=True))
        assert r.headers["Content-Type"] == "application/json"
        if status == 401:
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert fingerprint(sql) == before, f"{method} {url} {headers}: a refused request wrote"


def test_the_token_is_checked_before_the_body(http: FlaskClient, sql: Sql) -> None:
    """A bad body, a NUL in an id: still 401/403 first (an anonymous client learns nothing)."""
    before = fingerprint(sql)
    assert http.post("/intents", data="{bad").status_code == 401
    assert http.post("/runs/%00/retry", headers=_bearer("nobody-0123456789abcdef")).status_code == 403
    assert http.post("/intents", data="{bad", headers=_bearer(ALICE)).json == {"error": "invalid json"}
    assert fingerprint(sql) == before


def test_a_known_token_is_accepted(http: FlaskClient) -> None:
    r = http.post("/intents", json=INTENT, headers=_bearer(ALICE))
    assert r.status_code == 201
    intent = body(r)["intentId"]
    r = http.post(f"/intents/{intent}/run", json=KEY, headers={"Authorization": f"bearer  {BOB}"})
    assert r.status_code == 202, r.json
    assert http.get("/api/ops/wf?limit=5", headers=_bearer(BOB)).status_code == 200


def test_reads_stay_open(http: FlaskClient) -> None:
    intent = body(http.post("/api/intents", json=INTENT, headers=_bearer(ALICE)))["intentId"]
    run = body(http.post(f"/intents/{intent}/run", json=KEY, headers=_bearer(ALICE)))["runId"]
    assert http.get(f"/runs/{run}").status_code == 200
    assert http.get(f"/api/runs/{intent}").status_code == 200
    assert http.get(f"/api/runs/{intent}/steps").status_code == 200
    assert http.get("/api/artifacts/artifact%3A%2F%2Fnone").status_code == 404
    assert http.get("/marks?wf=x").status_code == 200
    assert http.get("/openapi.json").status_code == 200
    # Wrong methods and unknown routes stay 404 (no route, nothing to protect).
    assert (http.put("/intents").status_code, http.post("/api/nope").status_code) == (404, 404)


def test_the_token_name_is_the_audit_actor(http: FlaskClient, sql: Sql) -> None:
    intent = body(http.post("/intents", json=INTENT, headers=_bearer(ALICE)))["intentId"]
    run = body(http.post(f"/intents/{intent}/run", json=KEY, headers=_bearer(ALICE)))
    r = http.post(
        f"/api/ops/wf/{intent}/cancel", json={"actor": "mallory", "reason": "r1"}, headers=_bearer(BOB)
    )
    assert r.status_code == 202, r.json
    rows = sql(
        "SELECT inline FROM app.artifacts WHERE run_id = %s AND step_id = 'OPS' ORDER BY created_at",
        (run["runId"],),
    )
    assert [(x["inline"]["op"], x["inline"]["actor"], x["inline"]["reason"]) for x in rows] == [
        ("cancel", "bob", "r1")
    ]
    audit = body(http.get(f"/api/ops/wf/{intent}", headers=_bearer(ALICE)))["audit"]
    assert [(a["op"], a["actor"]) for a in audit] == [("cancel", "bob")]


def test_the_document_applies_security_to_the_protected_operations(http: FlaskClient) -> None:
    doc = body(http.get("/openapi.json"))
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    secured = {(m.upper(), p) for p, ops in doc["paths"].items() for m, op in ops.items() if "security" in op}
    for method, path in secured:
        op = doc["paths"][path][method.lower()]
        assert op["security"] == [{"bearerAuth": []}]
        assert {"401", "403"} <= set(op["responses"])
    assert ("POST", "/intents") in secured and ("GET", "/api/ops/wf") in secured
    assert ("POST", "/api/ops/sleep") in secured and ("POST", "/runs/{run_id}/retry") in secured
    assert ("GET", "/runs/{run_id}") not in secured and ("GET", "/api/runs/{workflow_id}") not in secured
    assert ("POST", "/crashdemo") not in secured and ("GET", "/openapi.json") not in secured
