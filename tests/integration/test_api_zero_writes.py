"""Fail closed (contract-api §1.5): every rejected request on every route writes nothing.

Each case sends one bad request and compares a fingerprint (row count and content hash) of every
table in schemas `app` and `dbos` before and after: no insert, no update, no message, no workflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.runtime import Runtime
from tests.support.api import KEY, Sql, create_intent, fingerprint, post, set_run, start_run


@dataclass(frozen=True)
class World:
    """Rows the bad requests aim at: an intent without a run, a queued run, a waiting run."""

    intent: str
    queued: str  # workflow id (= intent id) of a queued run
    queued_run: str
    waiting: str  # run id of a run in waiting_input


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


@pytest.fixture
def world(http: FlaskClient, sql: Sql) -> World:
    queued = create_intent(http)
    queued_run = start_run(http, queued)["runId"]
    waiting_intent = create_intent(http)
    waiting = start_run(http, waiting_intent)["runId"]
    set_run(sql, waiting, status="waiting_input", error="plan_not_approved", next_action="APPROVE_PLAN")
    return World(intent=create_intent(http), queued=queued, queued_run=queued_run, waiting=waiting)


def _j(value: Any) -> str:
    return json.dumps(value)


MALFORMED = ["{bad", "[1,", "nul", '{"a":1}}', "\x00", "NaN"]
NOT_OBJECTS = ["[]", '"s"', "1", "null", "true"]

INTENT_BAD = [
    *MALFORMED,
    *NOT_OBJECTS,
    "{}",
    _j({"goal": ""}),
    _j({"goal": "g", "inputs": {}}),
    _j({"goal": 1, "inputs": {}, "constraints": {}}),
    _j({"goal": "g", "inputs": [], "constraints": {}}),
    _j({"goal": "g", "inputs": {}, "constraints": {}, "connectors": [1]}),
    _j({"goal": "g", "inputs": {}, "constraints": {}, "unknownField": 1}),
]

RUN_REQUEST_BAD = [
    _j({"extra": True}),
    _j({"priority": 1.5, **KEY}),
    _j({"priority": True, **KEY}),
    _j({"timeoutMS": "5", **KEY}),
    _j({"queueName": "nopeQ", **KEY}),
    _j({"tenantId": "", **KEY}),
    _j({"queuePartitionKey": ""}),
    _j({"workload": {"concurrency": 1, "steps": 1}, **KEY}),
    _j({"workload": {"concurrency": -1, "steps": 1, "sandboxMinutes": 1}, **KEY}),
    _j({"workload": {"concurrency": 1, "steps": 1, "sandboxMinutes": 1, "x": 1}, **KEY}),
]

POLICY_BAD = [
    _j({}),
    _j({"traceId": "t"}),
    _j({"queuePartitionKey": "   "}),
    _j({"recipeName": "nope", **KEY}),
    _j({"recipeVersion": 7, **KEY}),
    _j({"queueName": "sbxQ", **KEY}),
    _j({"queueName": "controlQ", **KEY}),
    _j({"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1}}),
    _j({"workload": {"concurrency": 1, "steps": 999, "sandboxMinutes": 1}, **KEY}),
    _j({"workload": {"concurrency": 1, "steps": 1, "sandboxMinutes": 999}, **KEY}),
    _j({"tenantId": " ", **KEY}),
    _j({"taskKey": " ", **KEY}),
]

APPROVAL_BAD = [
    *MALFORMED,
    *NOT_OBJECTS,
    "",
    "  ",
    "{}",
    _j({"notes": "n"}),
    _j({"approvedBy": ""}),
    _j({"approvedBy": 5}),
    _j({"approvedBy": "a", "notes": 1}),
    _j({"approvedBy": "a", "extra": 1}),
]

EVENT_BAD = [
    *MALFORMED,
    *NOT_OBJECTS,
    "",
    "  ",
    "{}",
    _j({"type": "x"}),
    _j({"payload": {}}),
    _j({"type": 1, "payload": {}}),
    _j({"type": "x", "payload": []}),
    _j({"type": "x", "payload": {}, "extra": 1}),
]


Case = tuple[str, str, str, int]  # (method, url template, raw body, expected status)


def _intent_cases() -> Iterator[Case]:
    for raw in INTENT_BAD:
        yield "POST", "/intents", raw, 400
        yield "POST", "/api/intents", raw, 400
    yield "POST", "/api/intents", "   ", 400  # whitespace is malformed here (S7)
    yield "POST", "/api/intents", "", 400  # empty is {} then missing fields


def _start_cases() -> Iterator[Case]:
    for raw in [*MALFORMED, *NOT_OBJECTS, *RUN_REQUEST_BAD, *POLICY_BAD, ""]:
        yield "POST", "/intents/it_missing/run", raw, 404  # intent first, body never read
    for raw in [*MALFORMED, *NOT_OBJECTS, *RUN_REQUEST_BAD]:
        yield "POST", "/intents/{intent}/run", raw, 400
    for raw in POLICY_BAD:
        yield "POST", "/intents/{intent}/run", raw, 400

    for raw in [*MALFORMED, *NOT_OBJECTS, "", "  ", "{}", _j({"intentId": ""}), _j({"intentId": 1})]:
        yield "POST", "/api/runs", raw, 400
    for raw in RUN_REQUEST_BAD:
        yield "POST", "/api/runs", _j({"intentId": "{intent}", **json.loads(raw)}), 400
    for raw in POLICY_BAD:
        yield "POST", "/api/runs", _j({"intentId": "{intent}", **json.loads(raw)}), 400
    yield "POST", "/api/runs", _j({"intentId": "it_missing", **KEY}), 404


def _run_cases() -> Iterator[Case]:
    for prefix in ("/runs", "/api/runs"):
        yield "POST", prefix + "/run_missing/approve-plan", _j({"approvedBy": "a"}), 404
        yield "POST", prefix + "/run_missing/approve-plan", "{bad", 404
        for raw in APPROVAL_BAD:
            yield "POST", prefix + "/{waiting}/approve-plan", raw, 400
            yield "POST", prefix + "/{queued}/approve-plan", raw, 400

    for raw in [_j({"type": "t", "payload": {}}), *EVENT_BAD]:
        yield "POST", "/runs/{queued}/events", raw, 409
        yield "POST", "/runs/run_missing/events", raw, 404
    for raw in EVENT_BAD:
        yield "POST", "/runs/{waiting}/events", raw, 400

    for raw in ["", "{bad", _j({"fromStep": "CompileST"})]:
        yield "POST", "/runs/{queued_run}/retry", raw, 409
        yield "POST", "/runs/{waiting}/retry", raw, 409
        yield "POST", "/runs/run_missing/retry", raw, 404

    for url in (
        "/runs/run_missing",
        "/api/runs/it_missing",
        "/api/runs/it_missing/steps",
        "/api/artifacts/x",
    ):
        yield "GET", url, "", 404
    for method, url in (("PUT", "/intents"), ("DELETE", "/runs/{queued}"), ("PATCH", "/api/runs/{queued}")):
        yield method, url, _j({"approvedBy": "a"}), 404


# Templates name World fields: {intent}, {queued}, {queued_run}, {waiting}.
CASES: list[Case] = [*_intent_cases(), *_start_cases(), *_run_cases()]


def test_every_rejection_writes_nothing(http: FlaskClient, sql: Sql, world: World) -> None:
    failures: list[str] = []
    for method, template, raw, status in CASES:
        url = template.format(**vars(world))
        body = raw.replace("{intent}", world.intent)
        before = fingerprint(sql)
        r = http.open(url, method=method, data=body)
        label = f"{method} {url} {body!r}"
        if r.status_code != status:
            failures.append(f"{label}: status {r.status_code} {r.get_data(as_text=True)}, expected {status}")
        if r.headers["Content-Type"] != "application/json" or "error" not in (r.json or {}):
            failures.append(f"{label}: not a JSON error envelope")
        after = fingerprint(sql)
        changed = sorted(t for t in after if after[t] != before.get(t))
        if changed:
            failures.append(f"{label}: wrote to {changed}")
    assert failures == [], "\n".join(failures)
    assert len(CASES) > 250


def test_the_fixture_world_is_what_the_cases_assume(sql: Sql, world: World) -> None:
    statuses = {
        r["id"]: r["status"]
        for r in sql(
            "SELECT id, status FROM app.runs WHERE id IN (%s, %s)", (world.queued_run, world.waiting)
        )
    }
    assert statuses == {world.queued_run: "queued", world.waiting: "waiting_input"}
    assert sql("SELECT count(*) AS n FROM app.runs WHERE intent_id = %s", (world.intent,))[0]["n"] == 0


def test_an_accepted_request_does_write(http: FlaskClient, sql: Sql, world: World) -> None:
    """The oracle can see a write: the same fingerprint moves for an accepted approval."""
    before = fingerprint(sql)
    assert post(http, f"/runs/{world.waiting}/approve-plan", {"approvedBy": "a"}).status_code == 202
    after = fingerprint(sql)
    assert after["app.plan_approvals"] != before["app.plan_approvals"]
    assert after["dbos.notifications"] != before["dbos.notifications"]
