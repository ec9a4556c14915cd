"""Bad input is refused cleanly (issue 8, "Bad input"): a JSON 4xx with a stable message, and no write.

Each case is one of the issue's list: bodies over the size limit (413), NUL and lone surrogates in any
string or path id, `1e999`, integers out of Postgres range, `timeoutMS` not positive, blank event
types (400). Every rejection is checked with the zero-write oracle of test_api_zero_writes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import RequestHeaderFieldsTooLarge, RequestURITooLarge

from kodo.api import create_app
from kodo.api.errors import register
from kodo.runtime import Runtime
from tests.support.api import INTENT, KEY, Sql, create_intent, fingerprint, post, set_run, start_run

BAD_TEXT = "must not contain NUL or unpaired surrogate characters"
BAD_PARAM = {"error": "invalid request parameter: " + BAD_TEXT}
TOO_LARGE = {"error": "request body too large"}


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


@dataclasses.dataclass(frozen=True)
class World:
    intent: str  # no run yet
    queued: str  # workflow id of a queued run
    waiting: str  # run id of a run in waiting_input


@pytest.fixture
def world(http: FlaskClient, sql: Sql) -> World:
    queued = create_intent(http)
    start_run(http, queued)
    waiting_intent = create_intent(http)
    waiting = start_run(http, waiting_intent)["runId"]
    set_run(sql, waiting, status="waiting_input", error="plan_not_approved", next_action="APPROVE_PLAN")
    return World(intent=create_intent(http), queued=queued, waiting=waiting)


def _j(value: Any) -> str:
    return json.dumps(value)  # ensure_ascii: NUL and surrogates travel as \u escapes, as clients send them


def _rejects(http: FlaskClient, sql: Sql, method: str, url: str, raw: str, status: int) -> dict[str, Any]:
    before = fingerprint(sql)
    r = http.open(url, method=method, data=raw)
    label = f"{method} {url} {raw[:120]!r}"
    assert r.status_code == status, f"{label}: {r.status_code} {r.get_data(as_text=True)[:300]}"
    assert r.headers["Content-Type"] == "application/json", label
    assert isinstance(r.json, dict) and isinstance(r.json.get("error"), str), label
    after = fingerprint(sql)
    assert sorted(t for t in after if after[t] != before.get(t)) == [], f"{label}: wrote"
    result: dict[str, Any] = r.json
    return result


# ---- NUL and lone surrogates in bodies --------------------------------------------------------------

BAD_STRINGS = ["a\x00b", "\ud800", "x\udfffy"]


def _intent_bodies(bad: str) -> list[dict[str, Any]]:
    return [
        {**INTENT, "goal": bad},
        {**INTENT, "inputs": {"k": bad}},
        {**INTENT, "inputs": {bad: 1}},
        {**INTENT, "inputs": {"deep": [{"x": bad}]}},
        {**INTENT, "constraints": {"c": bad}},
        {**INTENT, "connectors": [bad]},
    ]


def _run_bodies(bad: str) -> list[dict[str, Any]]:
    return [
        {"traceId": bad, **KEY},
        {"tenantId": bad, **KEY},
        {"taskKey": bad, **KEY},
        {"queuePartitionKey": bad},
        {"deduplicationID": bad, **KEY},
        {"recipeName": bad, **KEY},
    ]


@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_bad_characters_in_an_intent_are_a_400(http: FlaskClient, sql: Sql, bad: str) -> None:
    for url in ("/intents", "/api/intents"):
        for b in _intent_bodies(bad):
            body = _rejects(http, sql, "POST", url, _j(b), 400)
            assert body["error"].startswith("invalid Intent: data/") and BAD_TEXT in body["error"]
            assert body["details"][0]["message"] == BAD_TEXT


@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_bad_characters_in_a_run_start_are_a_400(http: FlaskClient, sql: Sql, world: World, bad: str) -> None:
    for b in _run_bodies(bad):
        err = _rejects(http, sql, "POST", f"/intents/{world.intent}/run", _j(b), 400)
        assert err["error"].startswith("invalid RunRequest: data/") and BAD_TEXT in err["error"]
        _rejects(http, sql, "POST", "/api/runs", _j({"intentId": world.intent, **b}), 400)
    err = _rejects(http, sql, "POST", "/api/runs", _j({"intentId": bad, **KEY}), 400)
    assert err["error"] == f"invalid RunRequest: data/intentId {BAD_TEXT}"
    # Nothing burnt the intent: the next valid start is a fresh, enqueued run.
    started = start_run(http, world.intent)
    assert sql("SELECT status FROM app.runs WHERE id = %s", (started["runId"],))[0]["status"] == "queued"


@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_bad_characters_in_events_approvals_and_ops_are_a_400(
    http: FlaskClient, sql: Sql, world: World, bad: str
) -> None:
    events: list[dict[str, Any]] = [
        {"type": bad, "payload": {}},
        {"type": "t", "payload": {"k": bad}},
        {"type": "t", "payload": {bad: 1}},
    ]
    for b in events:
        _rejects(http, sql, "POST", f"/runs/{world.waiting}/events", _j(b), 400)
    for prefix in ("/runs", "/api/runs"):
        for b in ({"approvedBy": bad}, {"approvedBy": "a", "notes": bad}):
            _rejects(http, sql, "POST", f"{prefix}/{world.waiting}/approve-plan", _j(b), 400)
    actions: list[tuple[str, dict[str, Any]]] = [("cancel", {}), ("resume", {}), ("fork", {"stepN": 1})]
    for action, extra in actions:
        for b in ({"actor": bad, **extra}, {"reason": bad, **extra}):
            _rejects(http, sql, "POST", f"/api/ops/wf/{world.queued}/{action}", _j(b), 400)
    _rejects(http, sql, "POST", f"/api/ops/wf/{world.queued}/fork", _j({"stepN": 1, "appVersion": bad}), 400)


# ---- NUL and lone surrogates in path ids and query values ----------------------------------------

PATH_CASES = [
    ("GET", "/runs/{bad}"),
    ("GET", "/api/runs/{bad}"),
    ("GET", "/api/runs/{bad}/steps"),
    ("GET", "/api/ops/wf/{bad}"),
    ("GET", "/api/ops/wf/{bad}/steps"),
    ("GET", "/api/artifacts/{bad}"),
    ("GET", "/api/artifacts/artifact%3A%2F%2Frun%2F{bad}"),
    ("POST", "/intents/{bad}/run"),
    ("POST", "/runs/{bad}/events"),
    ("POST", "/runs/{bad}/retry"),
    ("POST", "/runs/{bad}/approve-plan"),
    ("POST", "/api/runs/{bad}/approve-plan"),
    ("POST", "/api/ops/wf/{bad}/cancel"),
    ("POST", "/api/ops/wf/{bad}/resume"),
    ("POST", "/api/ops/wf/{bad}/fork"),
    ("GET", "/marks?wf={bad}"),
    ("GET", "/slowmarks?wf={bad}"),
    ("POST", "/crashdemo?wf={bad}"),
    ("POST", "/slowstep?wf={bad}"),
    ("GET", "/api/ops/wf?name={bad}"),
]


@pytest.mark.parametrize(("method", "template"), PATH_CASES)
def test_nul_in_a_path_id_or_query_value_is_a_400(
    http: FlaskClient, sql: Sql, method: str, template: str
) -> None:
    for bad in ("%00", "a%00b"):
        body = _rejects(http, sql, method, template.format(bad=bad), _j({"approvedBy": "a"}), 400)
        assert body == BAD_PARAM


# ---- numbers -----------------------------------------------------------------------------------------

RUN_NUMBER_BAD: list[dict[str, Any]] = [
    {"priority": 2**40},
    {"priority": 2**31},
    {"priority": -(2**31) - 1},
    {"timeoutMS": 10**30},
    {"timeoutMS": 2**31},
    {"timeoutMS": -5},
    {"timeoutMS": 0},
    {"workload": {"concurrency": 2**40, "steps": 1, "sandboxMinutes": 1}},
]


def test_out_of_range_integers_in_a_run_start_are_a_400(http: FlaskClient, sql: Sql, world: World) -> None:
    for b in RUN_NUMBER_BAD:
        err = _rejects(http, sql, "POST", f"/intents/{world.intent}/run", _j({**b, **KEY}), 400)
        assert err["error"].startswith("invalid RunRequest: data/"), err
        _rejects(http, sql, "POST", "/api/runs", _j({"intentId": world.intent, **b, **KEY}), 400)
    # The intent is not burnt: a valid start is a fresh queued run with its workflow.
    started = start_run(http, world.intent, priority=2**31 - 1, timeoutMS=2**31 - 1)
    assert sql("SELECT status FROM app.runs WHERE id = %s", (started["runId"],))[0]["status"] == "queued"
    wf = sql("SELECT priority FROM dbos.workflow_status WHERE workflow_uuid = %s", (world.intent,))
    assert len(wf) == 1


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_invalid_json(http: FlaskClient, sql: Sql, world: World, number: str) -> None:
    raws = [
        ("/intents", '{"goal":"g","inputs":{"x":N},"constraints":{}}'),
        ("/api/intents", '{"goal":"g","inputs":{},"constraints":{"x":[N]}}'),
        (f"/intents/{world.intent}/run", '{"priority":N,"queuePartitionKey":"p"}'),
        (f"/runs/{world.waiting}/events", '{"type":"t","payload":{"x":N}}'),
    ]
    for url, raw in raws:
        assert _rejects(http, sql, "POST", url, raw.replace("N", number), 400) == {"error": "invalid json"}


# ---- string lengths and event types -----------------------------------------------------------------


def test_strings_over_their_limits_are_a_400(http: FlaskClient, sql: Sql, world: World) -> None:
    long_id = "x" * 257
    _rejects(http, sql, "POST", "/intents", _j({**INTENT, "goal": "g" * 65_537}), 400)
    _rejects(http, sql, "POST", "/intents", _j({**INTENT, "connectors": [long_id]}), 400)
    for key in ("traceId", "tenantId", "taskKey", "queuePartitionKey", "deduplicationID", "recipeName"):
        err = _rejects(http, sql, "POST", f"/intents/{world.intent}/run", _j({**KEY, key: long_id}), 400)
        assert err["details"][0]["keyword"] == "maxLength", err
    _rejects(http, sql, "POST", f"/runs/{world.waiting}/events", _j({"type": long_id, "payload": {}}), 400)
    _rejects(http, sql, "POST", f"/runs/{world.waiting}/approve-plan", _j({"approvedBy": long_id}), 400)
    # At the limits, accepted.
    assert post(http, "/intents", {**INTENT, "goal": "g" * 65_536}).status_code == 201
    assert start_run(http, world.intent, traceId="t" * 256)["workflowId"] == world.intent


@pytest.mark.parametrize("event_type", ["", " ", "\t\n"])
def test_a_blank_event_type_is_a_400(http: FlaskClient, sql: Sql, world: World, event_type: str) -> None:
    err = _rejects(
        http, sql, "POST", f"/runs/{world.waiting}/events", _j({"type": event_type, "payload": {}}), 400
    )
    assert err["error"].startswith("invalid RunEvent: data/type"), err


# ---- body size ---------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413(http: FlaskClient, sql: Sql, world: World) -> None:
    big = "g" * (1_048_576 + 1)
    assert _rejects(http, sql, "POST", "/intents", _j({**INTENT, "goal": big}), 413) == TOO_LARGE
    payload = _j({"type": "t", "payload": {"blob": "x" * 10_000_000}})
    assert _rejects(http, sql, "POST", f"/runs/{world.waiting}/events", payload, 413) == TOO_LARGE
    assert (
        _rejects(http, sql, "POST", "/api/runs", _j({"intentId": world.intent, "x": big}), 413) == TOO_LARGE
    )


def test_the_body_limit_is_configurable(rt: Runtime, sql: Sql) -> None:
    small = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, max_body_bytes=64))
    http = create_app(runtime=small).test_client()
    assert _rejects(http, sql, "POST", "/intents", _j({**INTENT, "goal": "g" * 64}), 413) == TOO_LARGE
    assert post(http, "/intents", INTENT).status_code == 201  # 50 bytes


# ---- the server's own errors --------------------------------------------------------------------------


def test_the_servers_own_errors_are_json() -> None:
    app = Flask("probe")
    register(app)

    @app.get("/uri")
    def _uri() -> str:
        raise RequestURITooLarge()

    @app.get("/headers")
    def _headers() -> str:
        raise RequestHeaderFieldsTooLarge()

    client = app.test_client()
    for url, status, error in (
        ("/uri", 414, "request uri too long"),
        ("/headers", 431, "request header fields too large"),
    ):
        r = client.get(url)
        assert (r.status_code, r.headers["Content-Type"], r.json) == (
            status,
            "application/json",
            {"error": error},
        )


def test_a_wrong_method_is_a_json_404(http: FlaskClient, world: World) -> None:
    for method, url in (("PUT", "/intents"), ("DELETE", f"/api/runs/{world.queued}"), ("GET", "/api/runs")):
        r = http.open(url, method=method)
        assert (r.status_code, r.headers["Content-Type"], r.json) == (
            404,
            "application/json",
            {"error": "not found"},
        )


# ---- a start that fails after validation ------------------------------------------------------------


def test_retry_of_a_run_whose_start_failed_is_a_clear_409(http: FlaskClient, sql: Sql) -> None:
    """A dedup clash fails the enqueue after validation (contract-api §1.5 exception 1): the run row
    stays `failed` with no workflow, so `/retry` has nothing to repair and says so, writing nothing."""
    first, second = create_intent(http), create_intent(http)
    start_run(http, first, deduplicationID="clash-" + first)
    assert (
        post(http, f"/intents/{second}/run", {"deduplicationID": "clash-" + first, **KEY}).status_code == 500
    )
    run_id = sql("SELECT id FROM app.runs WHERE workflow_id = %s", (second,))[0]["id"]
    for url in (f"/runs/{run_id}/retry", f"/runs/{second}/retry"):
        assert _rejects(http, sql, "POST", url, "", 409) == {
            "error": "cannot retry run in status failed: its workflow was never enqueued",
            "status": "failed",
        }
