"""The intent and run routes over HTTP against the real Postgres (contract-api §4, §6, §15.2).

No worker runs here: a started run stays `queued`/ENQUEUED, and other statuses are written with SQL.
Runs that execute (succeeded, retries_exceeded, ...) are covered by tests/e2e.
"""

from __future__ import annotations

import dataclasses
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.intent.ids import IdGenerator
from kodo.runtime import Runtime
from kodo.workflow import serde
from tests.support.api import KEY, Sql, body, create_intent, post, set_run, start_run

IT = re.compile(r"^it_[0-9a-f]{16}$")
RUN = re.compile(r"^run_[0-9a-f]{16}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


def _workflow(sql: Sql, wid: str) -> dict[str, Any] | None:
    rows = sql(
        "SELECT name, status, queue_name, queue_partition_key, priority, deduplication_id, inputs "
        "FROM dbos.workflow_status WHERE workflow_uuid = %s",
        (wid,),
    )
    return rows[0] if rows else None


def _notifications(sql: Sql, wid: str) -> list[dict[str, Any]]:
    rows = sql(
        "SELECT topic, message FROM dbos.notifications WHERE destination_uuid = %s ORDER BY seq", (wid,)
    )
    return [{"topic": r["topic"], "message": serde.loads(r["message"])} for r in rows]


# ---- intents ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/intents", "/api/intents"])
def test_create_intent_stores_goal_and_payload(http: FlaskClient, sql: Sql, url: str) -> None:
    r = post(
        http, url, {"goal": "  g  ", "inputs": {"a": 1}, "constraints": {"c": True}, "connectors": ["x"]}
    )
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json"
    assert list(r.json) == ["intentId"] and IT.match(r.json["intentId"])
    row = sql("SELECT goal, payload FROM app.intents WHERE id = %s", (r.json["intentId"],))[0]
    assert row == {
        "goal": "  g  ",
        "payload": {"inputs": {"a": 1}, "constraints": {"c": True}, "connectors": ["x"]},
    }


def test_absent_connectors_are_not_stored_as_null(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    assert sql("SELECT payload FROM app.intents WHERE id = %s", (intent_id,))[0]["payload"] == {
        "inputs": {},
        "constraints": {},
    }
    r = post(http, "/intents", {"goal": "g", "inputs": {}, "constraints": {}, "connectors": None})
    assert sql("SELECT payload FROM app.intents WHERE id = %s", (r.json["intentId"],))[0]["payload"] == {
        "inputs": {},
        "constraints": {},
        "connectors": None,
    }


@pytest.mark.parametrize(
    ("url", "raw", "error"),
    [
        ("/intents", '{"goal":""}', "invalid Intent: "),
        ("/api/intents", '{"goal":"g","inputs":{},"constraints":{},"unknownField":1}', "invalid Intent: "),
        ("/intents", "   ", "invalid Intent: data must have required property 'goal'"),  # whitespace is {}
        ("/api/intents", "", "invalid Intent: data must have required property 'goal'"),
    ],
)
def test_intent_schema_errors(http: FlaskClient, url: str, raw: str, error: str) -> None:
    r = post(http, url, raw=raw)
    assert r.status_code == 400
    assert r.json["error"].startswith(error) and "details" in r.json


@pytest.mark.parametrize(
    ("url", "raw"), [("/intents", "{bad"), ("/api/intents", "{bad"), ("/api/intents", "  ")]
)
def test_intent_malformed_json(http: FlaskClient, url: str, raw: str) -> None:
    r = post(http, url, raw=raw)
    assert (r.status_code, r.json) == (400, {"error": "invalid json"})


def test_seeded_restart_never_overwrites_an_intent(rt: Runtime, sql: Sql) -> None:
    """restart-no-id-collision: a restarted process with the same RANDOM_SEED draws past taken ids."""
    seed = 4242  # the session starts from an empty schema, and no other test seeds ids
    seeded = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, random_seed=seed))
    expected = IdGenerator(seed)
    first_app = create_app(runtime=seeded).test_client()
    first = create_intent(first_app, goal="first")
    assert first == expected.new_id("it")

    restarted = create_app(runtime=seeded).test_client()  # same seed, same sequence
    r = post(restarted, "/intents", {"goal": "second", "inputs": {}, "constraints": {}})
    assert r.status_code == 201
    assert r.json["intentId"] == expected.new_id("it")  # the collision was skipped, not upserted
    assert sql("SELECT goal FROM app.intents WHERE id = %s", (first,))[0]["goal"] == "first"
    assert sql("SELECT goal FROM app.intents WHERE id = %s", (r.json["intentId"],))[0]["goal"] == "second"


# ---- starting runs ------------------------------------------------------------------------------------


def test_legacy_start_writes_the_run_and_its_workflow_together(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    r = post(
        http,
        f"/intents/{intent_id}/run",
        {"traceId": "tr-1", "tenantId": "ten", "taskKey": "tk-" + intent_id, "priority": 0, **KEY},
    )
    assert r.status_code == 202
    assert list(r.json) == ["runId", "workflowId"]
    assert RUN.match(r.json["runId"]) and r.json["workflowId"] == intent_id
    run = sql("SELECT * FROM app.runs WHERE id = %s", (r.json["runId"],))[0]
    assert {k: run[k] for k in ("intent_id", "workflow_id", "status", "trace_id", "tenant_id")} == {
        "intent_id": intent_id,
        "workflow_id": intent_id,
        "status": "queued",
        "trace_id": "tr-1",
        "tenant_id": "ten",
    }
    assert (run["queue_partition_key"], run["retry_count"], run["next_action"]) == ("tenant-a", 0, None)
    assert _workflow(sql, intent_id) == {
        "name": "IntentWorkflow.run",
        "status": "ENQUEUED",
        "queue_name": "intentQ",
        "queue_partition_key": None,  # S7: the parent is enqueued without its key
        "priority": 0,
        "deduplication_id": "tk-" + intent_id,  # defaults to taskKey
        "inputs": serde.encode_inputs((intent_id,), {}),
    }


def test_repeat_start_returns_the_same_run(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    first = start_run(http, intent_id)
    again = start_run(http, intent_id, traceId="other")
    assert again == first
    assert sql("SELECT count(*) AS n FROM app.runs WHERE workflow_id = %s", (intent_id,))[0]["n"] == 1
    assert (
        sql("SELECT count(*) AS n FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,))[0]["n"]
        == 1
    )


def test_parallel_starts_make_one_run(rt: Runtime, http: FlaskClient, sql: Sql) -> None:
    """intent-workflow-idempotency: 10 parallel starts, one run row, one workflow, one runId."""
    intent_id = create_intent(http)
    app = create_app(runtime=rt)

    def start(_: int) -> tuple[int, Any]:
        r = app.test_client().post(f"/intents/{intent_id}/run", data=json.dumps(KEY))
        return r.status_code, r.json

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(start, range(10)))
    assert {status for status, _ in results} == {202}
    assert len({started["runId"] for _, started in results}) == 1
    assert {started["workflowId"] for _, started in results} == {intent_id}
    assert sql("SELECT count(*) AS n FROM app.runs WHERE workflow_id = %s", (intent_id,))[0]["n"] == 1


def test_legacy_start_looks_the_intent_up_before_the_body(http: FlaskClient) -> None:
    r = post(http, "/intents/it_missing/run", raw="{bad")
    assert (r.status_code, r.json) == (404, {"error": "intent not found"})


def test_api_start_returns_the_header_of_the_row(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    r = post(http, "/api/runs", {"intentId": intent_id, "traceId": "tr-9", **KEY})
    assert r.status_code == 202
    assert list(r.json) == [
        "workflowID",
        "status",
        "workflowName",
        "createdAt",
        "updatedAt",
        "traceId",
        "spanId",
        "nextAction",
        "lastStep",
    ]
    assert r.json["workflowID"] == intent_id and r.json["status"] == "ENQUEUED"
    assert (r.json["workflowName"], r.json["traceId"], r.json["spanId"]) == ("RunIntent", "tr-9", None)
    row = sql("SELECT id FROM app.runs WHERE workflow_id = %s", (intent_id,))[0]
    # Reading by intent id and by run id gives the same run.
    assert body(http.get(f"/runs/{intent_id}"))["runId"] == row["id"]
    assert body(http.get(f"/runs/{row['id']}"))["workflowId"] == intent_id
    replay = post(http, "/api/runs", {"intentId": intent_id, **KEY})
    assert (replay.status_code, replay.json) == (202, r.json)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[]", {"error": "invalid json payload"}),
        ('"x"', {"error": "invalid json payload"}),
        ("null", {"error": "invalid json payload"}),
        ("{}", {"error": "intentId required"}),
        ('{"intentId":""}', {"error": "intentId required"}),
        ('{"intentId":5}', {"error": "intentId required"}),
        ("  ", {"error": "invalid json"}),
        ("{bad", {"error": "invalid json"}),
    ],
)
def test_api_start_envelope_errors(http: FlaskClient, raw: str, expected: dict[str, str]) -> None:
    r = post(http, "/api/runs", raw=raw)
    assert (r.status_code, r.json) == (400, expected)


def test_api_start_check_order(http: FlaskClient) -> None:
    intent_id = create_intent(http)
    # Schema before intent existence; intent existence before policy.
    r = post(http, "/api/runs", {"intentId": "it_nope", "extra": True})
    assert r.status_code == 400 and r.json["error"].startswith("invalid RunRequest: ") and "details" in r.json
    r = post(http, "/api/runs", {"intentId": "it_nope"})
    assert (r.status_code, r.json) == (404, {"error": "Intent not found: it_nope"})
    r = post(http, "/api/runs", {"intentId": intent_id})
    assert r.status_code == 400 and r.json == {
        "error": "queuePartitionKey is required for partitioned operations (queue: intentQ, isParent: true)",
        "code": "queue_policy_violation",
    }


def test_policy_reads_the_recipes(http: FlaskClient) -> None:
    intent_id = create_intent(http)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"recipeName": "sandbox-default", "workload": {"concurrency": 21, "steps": 1, "sandboxMinutes": 1}},
         "recipe cap exceeded: concurrency 21 > 20"),
        ({"recipeName": "control-default", "workload": {"concurrency": 1, "steps": 17, "sandboxMinutes": 1}},
         "recipe cap exceeded: steps 17 > 16"),
        ({"recipeName": "compile-default", "recipeVersion": 2}, "recipe not found: compile-default"),
        ({"recipeName": "compile-default", "recipeVersion": 10**30}, "recipe not found: compile-default"),
        ({"queueName": "sbxQ"}, "parent intent workflow must use intentQ (got sbxQ)"),
    ]  # fmt: skip
    for request_body, message in cases:
        r = post(http, f"/intents/{intent_id}/run", {**request_body, **KEY})
        assert (r.status_code, r.json) == (400, {"error": message, "code": "queue_policy_violation"}), message
    ok = post(
        http,
        f"/intents/{intent_id}/run",
        {"recipeName": "sandbox-default", "recipeVersion": 1, "taskKey": "k-" + intent_id,
         "workload": {"concurrency": 5, "steps": 10, "sandboxMinutes": 2}, **KEY},
    )  # fmt: skip
    assert ok.status_code == 202 and ok.json["workflowId"] == intent_id


def test_partition_law_off_admits_a_start_without_a_key(rt: Runtime, sql: Sql) -> None:
    demo = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, sbx_queue_partition=False))
    client = create_app(runtime=demo).test_client()
    intent_id = create_intent(client)
    r = post(client, f"/intents/{intent_id}/run", {})
    assert r.status_code == 202
    assert sql("SELECT queue_partition_key FROM app.runs WHERE id = %s", (r.json["runId"],))[0] == {
        "queue_partition_key": None
    }


def test_dedup_clash_leaves_a_failed_run_and_returns_500(http: FlaskClient, sql: Sql) -> None:
    """intent-queue: a second intent with the same deduplicationID while the first is in flight."""
    first, second = create_intent(http), create_intent(http)
    dedup = "dedup-" + first
    start_run(http, first, deduplicationID=dedup)
    r = post(http, f"/intents/{second}/run", {"deduplicationID": dedup, **KEY})
    assert (r.status_code, r.json) == (500, {"error": "internal error"})
    rows = sql("SELECT id, status FROM app.runs WHERE workflow_id = %s", (second,))
    assert [row["status"] for row in rows] == ["failed"]
    assert _workflow(sql, second) is None
    assert body(http.get(f"/api/runs/{second}"))["status"] == "ERROR"
    # While the deduplicationID is held, a repeat start fails the same way and writes nothing new.
    again = post(http, f"/intents/{second}/run", {"deduplicationID": dedup, **KEY})
    assert (again.status_code, again.json) == (500, {"error": "internal error"})
    assert sql("SELECT id, status FROM app.runs WHERE workflow_id = %s", (second,)) == [
        {"id": rows[0]["id"], "status": "failed"}
    ]
    assert _workflow(sql, second) is None


def test_a_failed_start_does_not_block_the_next_valid_start(http: FlaskClient, sql: Sql) -> None:
    """A start that failed after validation (its enqueue: a dedup clash) leaves its run `failed`, but
    the next valid start of the same intent enqueues it, under the same run id."""
    first, second = create_intent(http), create_intent(http)
    dedup = "dedup-" + first
    start_run(http, first, deduplicationID=dedup)
    r = post(http, f"/intents/{second}/run", {"deduplicationID": dedup, **KEY})
    assert r.status_code == 500
    [failed] = sql("SELECT id, status FROM app.runs WHERE workflow_id = %s", (second,))
    assert failed["status"] == "failed"
    # /retry on it answers clearly: it was never enqueued.
    retry = post(http, f"/runs/{failed['id']}/retry", {})
    assert (retry.status_code, body(retry)["error"]) == (
        409,
        "cannot retry run in status failed: its workflow was never enqueued",
    )
    # Without the clash (another deduplicationID), the next start enqueues it.
    again = post(
        http, f"/intents/{second}/run", {"deduplicationID": "other-" + second, "traceId": "t2", **KEY}
    )
    assert (again.status_code, again.json) == (202, {"runId": failed["id"], "workflowId": second})
    assert sql("SELECT status, trace_id FROM app.runs WHERE workflow_id = %s", (second,)) == [
        {"status": "queued", "trace_id": "t2"}
    ]
    workflow = _workflow(sql, second)
    assert workflow is not None and workflow["status"] == "ENQUEUED"
    assert workflow["deduplication_id"] == "other-" + second
    # A repeat of that start returns the queued run and enqueues nothing more.
    assert post(http, f"/intents/{second}/run", KEY).json == {"runId": failed["id"], "workflowId": second}


def test_trace_base_url_is_appended_last(rt: Runtime) -> None:
    url = "https://trace.example/{traceId}"
    traced = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, trace_base_url=url))
    client = create_app(runtime=traced).test_client()
    intent_id = create_intent(client)
    started = post(client, "/api/runs", {"intentId": intent_id, **KEY}).json
    assert list(started)[-1] == "traceBaseUrl" and started["traceBaseUrl"] == url
    assert body(client.get(f"/api/runs/{intent_id}"))["traceBaseUrl"] == url


# ---- reading runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/runs/run_missing", "/api/runs/it_missing", "/api/runs/it_missing/steps"])
def test_unknown_run_is_404(http: FlaskClient, url: str) -> None:
    r = http.get(url)
    assert (r.status_code, r.json, r.headers["Content-Type"]) == (
        404,
        {"error": "run not found"},
        "application/json",
    )


def test_fresh_run_view(http: FlaskClient) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id, traceId="t")["runId"]
    view = body(http.get(f"/runs/{run_id}"))
    assert view == {
        "runId": run_id,
        "workflowId": intent_id,
        "status": "queued",
        "steps": [],
        "artifacts": [],
        "traceId": "t",
        "lastStep": None,
        "retryCount": 0,
    }


# ---- approve-plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/runs", "/api/runs"])
def test_approve_writes_the_row_and_only_wakes_a_waiting_run(
    http: FlaskClient, sql: Sql, prefix: str
) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]

    r = post(http, f"{prefix}/{intent_id}/approve-plan", {"approvedBy": "alice", "notes": "ok"})
    assert r.status_code == 202
    assert list(r.json) == ["accepted", "runId", "approvedAt"]
    assert (r.json["accepted"], r.json["runId"]) == (True, run_id) and ISO_MS.match(r.json["approvedAt"])
    row = sql("SELECT approved_by, notes, approved_at FROM app.plan_approvals WHERE run_id = %s", (run_id,))[
        0
    ]
    assert (row["approved_by"], row["notes"]) == ("alice", "ok")
    assert _notifications(sql, intent_id) == []  # queued: the approval row is enough

    set_run(sql, run_id, status="waiting_input")
    again = post(http, f"{prefix}/{run_id}/approve-plan", {"approvedBy": "bob"})
    assert again.status_code == 202 and again.json["approvedAt"] >= r.json["approvedAt"]
    row = sql("SELECT approved_by, notes FROM app.plan_approvals WHERE run_id = %s", (run_id,))[0]
    assert row == {"approved_by": "bob", "notes": None}  # upsert overwrites
    assert _notifications(sql, intent_id) == [
        {"topic": "human-event", "message": {"type": "approve-plan", "payload": {"approvedBy": "bob"}}}
    ]


def test_approve_is_never_409(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    for status in ("succeeded", "retries_exceeded", "canceled", "running"):
        set_run(sql, run_id, status=status)
        assert post(http, f"/runs/{run_id}/approve-plan", {"approvedBy": "a"}).status_code == 202
    assert _notifications(sql, intent_id) == []


def test_approve_check_order(http: FlaskClient) -> None:
    intent_id = create_intent(http)
    start_run(http, intent_id)
    assert post(http, "/runs/nope/approve-plan", raw="{bad").json == {"error": "run not found"}
    r = post(http, f"/runs/{intent_id}/approve-plan", {"notes": "n"})
    assert r.status_code == 400 and "PlanApprovalRequest" in r.json["error"] and "details" in r.json
    # Whitespace: malformed on the legacy route, {} (then a schema error) on the /api one (S7).
    assert post(http, f"/runs/{intent_id}/approve-plan", raw=" ").json == {"error": "invalid json"}
    r = post(http, f"/api/runs/{intent_id}/approve-plan", raw=" ")
    assert r.status_code == 400 and r.json["error"].startswith("invalid PlanApprovalRequest: ")


# ---- events --------------------------------------------------------------------------------------------


def test_events_are_409_unless_waiting_even_with_a_bad_body(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    start_run(http, intent_id)
    for raw in ('{"type":"too_soon","payload":{}}', "{bad"):
        r = post(http, f"/runs/{intent_id}/events", raw=raw)
        assert (r.status_code, r.json) == (
            409,
            {"error": "cannot send event to run in status queued", "status": "queued"},
        )
    assert post(http, "/runs/nope/events", raw="{bad").json == {"error": "run not found"}


def test_event_to_a_waiting_run_is_delivered_whole(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    set_run(sql, run_id, status="waiting_input")
    assert post(http, f"/runs/{run_id}/events", raw="   ").json == {"error": "invalid json"}
    r = post(http, f"/runs/{run_id}/events", {"type": "approve-plan"})
    assert r.status_code == 400 and r.json["error"].startswith("invalid RunEvent: ")
    r = post(http, f"/runs/{run_id}/events", {"type": "answer", "payload": {"text": "42"}})
    assert (r.status_code, r.json) == (202, {"accepted": True})
    assert _notifications(sql, intent_id) == [
        {"topic": "human-event", "message": {"type": "answer", "payload": {"text": "42"}}}
    ]
    # An approve-plan *event* approves nothing: approval is the plan_approvals row.
    post(http, f"/runs/{run_id}/events", {"type": "approve-plan", "payload": {}})
    assert sql("SELECT count(*) AS n FROM app.plan_approvals WHERE run_id = %s", (run_id,))[0]["n"] == 0


# ---- retry ---------------------------------------------------------------------------------------------


def _step(sql: Sql, run_id: str, step_id: str, attempt: int = 1) -> None:
    sql(
        "INSERT INTO app.run_steps (run_id, step_id, phase, output, attempt, started_at) "
        "VALUES (%s, %s, 'p', '{}'::jsonb, %s, now())",
        (run_id, step_id, attempt),
    )


def test_retry_is_409_unless_failed(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    for status in ("queued", "running", "waiting_input", "succeeded", "canceled", "repairing"):
        set_run(sql, run_id, status=status)
        r = post(http, f"/runs/{run_id}/retry")
        assert (r.status_code, r.json) == (
            409,
            {"error": f"cannot retry run in status {status}", "status": status},
        )
    assert post(http, "/runs/nope/retry").json == {"error": "run not found"}


def test_retry_starts_a_repair_from_the_first_missing_step(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    set_run(sql, run_id, status="retries_exceeded", next_action="REPAIR")
    _step(sql, run_id, "CompileST")
    _step(sql, run_id, "ApplyPatchST")
    _step(sql, run_id, "ApplyPatchST", attempt=2)

    r = post(http, f"/runs/{intent_id}/retry", raw="{ignored body")
    assert (r.status_code, r.json) == (202, {"accepted": True, "newRunId": run_id, "fromStep": "DecideST"})
    repair = _workflow(sql, f"repair-{run_id}")
    assert repair is not None
    assert (repair["name"], repair["queue_name"], repair["status"]) == (
        "IntentWorkflow.repair",
        "controlQ",
        "ENQUEUED",
    )
    assert repair["inputs"] == serde.encode_inputs((run_id, 1), {})

    # Before the repair starts (retry_count unchanged) a second /retry maps to the same repair.
    assert post(http, f"/runs/{run_id}/retry").status_code == 202
    assert (
        sql(
            "SELECT count(*) AS n FROM dbos.workflow_status WHERE workflow_uuid LIKE %s",
            (f"repair-{run_id}%",),
        )[0]["n"]
        == 1
    )
    # After a repair bumped retry_count, the next /retry is a new repair with its own id.
    set_run(sql, run_id, status="failed", retry_count=1)
    _step(sql, run_id, "DecideST")
    _step(sql, run_id, "ExecuteST")
    r = post(http, f"/runs/{run_id}/retry")
    assert r.json == {"accepted": True, "newRunId": run_id, "fromStep": "ExecuteST"}
    second = _workflow(sql, f"repair-{run_id}-2")
    assert second is not None and second["inputs"] == serde.encode_inputs((run_id, 2), {})


def test_retry_without_steps_starts_at_compile(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    set_run(sql, run_id, status="failed")
    assert post(http, f"/runs/{run_id}/retry").json["fromStep"] == "CompileST"


# ---- artifacts -----------------------------------------------------------------------------------------


def _artifact(
    sql: Sql, run_id: str, kind: str, uri: str | None, inline: Any, *, attempt: int = 1, idx: int = 0
) -> None:
    sql(
        "INSERT INTO app.artifacts (run_id, step_id, idx, attempt, kind, uri, inline, sha256) "
        "VALUES (%s, 'S', %s, %s, %s, %s, %s::jsonb, 'h')",
        (run_id, idx, attempt, kind, uri, None if inline is None else json.dumps(inline)),
    )


def _uri(run_id: str, name: str) -> str:
    return f"artifact://run/{run_id}/step/S/task//{name}"


def _get_artifact(http: FlaskClient, uri: str) -> Any:
    from urllib.parse import quote

    return http.get("/api/artifacts/" + quote(uri, safe=""))


@pytest.mark.parametrize(
    ("kind", "inline", "content_type", "text"),
    [
        ("json", {"hello": "world"}, "application/json", '{\n  "hello": "world"\n}'),
        ("json", {"json": {"a": [1]}}, "application/json", '{\n  "a": [\n    1\n  ]\n}'),
        ("raw", {"json": "as-is"}, "application/json", "as-is"),
        ("question_card", {"text": "q?"}, "application/json", "q?"),
        ("timings", {"json": None}, "application/json", "null"),
        ("stdout", {"text": "OK: echo hello\n"}, "text/plain", "OK: echo hello\n"),
        ("none", {"status": "no_artifacts"}, "text/plain", '{\n  "status": "no_artifacts"\n}'),
        ("file", "plain string", "text/plain", "plain string"),
        ("plan_card", {"goal": "g", "design": ["d"]}, "text/plain", '{"goal":"g","design":["d"]}'),
        ("svg", "<svg/>", "image/svg+xml", "<svg/>"),
        ("patch", {"text": "diff ü"}, "text/plain", '{"text":"diff ü"}'),
    ],
)
def test_artifact_content_by_kind(
    http: FlaskClient, sql: Sql, kind: str, inline: Any, content_type: str, text: str
) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    _artifact(sql, run_id, kind, _uri(run_id, "a"), inline)
    r = _get_artifact(http, _uri(run_id, "a"))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == content_type
    assert r.get_data(as_text=True) == text


def test_artifact_highest_attempt_wins_and_raw_uri_paths_work(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    uri = _uri(run_id, "out.json")
    _artifact(sql, run_id, "json", uri, {"v": 1}, attempt=1)
    _artifact(sql, run_id, "json", uri, {"v": 2}, attempt=2)
    assert json.loads(_get_artifact(http, uri).get_data()) == {"v": 2}
    # Unencoded: the path keeps its `//` (no slash merging) and still resolves.
    assert json.loads(http.get("/api/artifacts/" + uri).get_data()) == {"v": 2}
    # Decoded exactly once: an encoded `%` stays a `%`.
    pct = _uri(run_id, "100%25.json")
    _artifact(sql, run_id, "json", pct, {"pct": True}, idx=1)
    assert json.loads(_get_artifact(http, pct).get_data()) == {"pct": True}


def test_artifact_without_inline_is_its_row(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    run_id = start_run(http, intent_id)["runId"]
    uri = _uri(run_id, "empty")
    _artifact(sql, run_id, "stdout", uri, None)
    r = _get_artifact(http, uri)
    assert r.headers["Content-Type"] == "application/json"
    row = json.loads(r.get_data())
    assert list(row) == [
        "run_id",
        "step_id",
        "task_key",
        "idx",
        "attempt",
        "kind",
        "uri",
        "inline",
        "sha256",
        "created_at",
    ]
    assert (row["run_id"], row["kind"], row["inline"], row["uri"]) == (run_id, "stdout", None, uri)
    assert ISO_MS.match(row["created_at"])


def test_unknown_artifact_is_404(http: FlaskClient) -> None:
    r = http.get("/api/artifacts/artifact%3A%2F%2Frun%2Fnope")
    assert (r.status_code, r.json) == (404, {"error": "artifact not found"})


# ---- routing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/runs"),
        ("GET", "/intents"),
        ("PUT", "/runs/x"),
        ("DELETE", "/api/runs/x"),
        ("OPTIONS", "/runs/x"),
        ("POST", "/runs/x"),
        ("GET", "/runs/x/retry"),
        ("GET", "/runs//x"),
    ],
)
def test_wrong_method_or_path_is_404_not_found(http: FlaskClient, method: str, url: str) -> None:
    r = http.open(url, method=method)
    assert (r.status_code, r.json) == (404, {"error": "not found"})


def test_timeout_ms_becomes_the_workflow_timeout(http: FlaskClient, sql: Sql) -> None:
    intent_id = create_intent(http)
    start_run(http, intent_id, timeoutMS=60000)
    [row] = sql("SELECT workflow_timeout_ms FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,))
    assert row == {"workflow_timeout_ms": 60000}
