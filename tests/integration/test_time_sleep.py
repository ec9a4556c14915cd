"""`POST /api/ops/sleep` (contract-api §2 row 24, §4.10, §10): validated first (a 400 writes nothing),
then the sleep's intent, run and workflow rows in one transaction, and a real worker writes the
`sleep-before-sleep` artifacts, sleeps durably and writes `sleep-after-sleep`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.intent.canonical import sha256_hex
from kodo.intent.timewf import SLEEP_WORKFLOW
from kodo.runtime import Runtime
from tests.support.api import Sql, body, fingerprint

ARTIFACT_KINDS = ["artifact_index", "timings", "raw", "stderr", "stdout"]


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


def artifacts_of(sql: Sql, run_id: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT step_id, task_key, idx, attempt, kind, uri, inline, sha256, created_at FROM app.artifacts "
        "WHERE run_id = %s AND step_id LIKE 'sleep-%%' ORDER BY created_at, step_id, idx",
        (run_id,),
    )


def test_a_sleep_writes_its_rows_then_before_and_after_artifacts(
    http: FlaskClient, rt: Runtime, sql: Sql, start_worker: Callable[..., Any]
) -> None:
    start_worker(queues="controlQ", concurrency=1)
    r = http.post("/api/ops/sleep?wf=sleep_it_1&sleep=800")
    assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowID": "sleep_it_1"})

    # The rows the original wrote first (§4.10), now with the workflow, committed together.
    assert sql("SELECT id, goal FROM app.intents WHERE id = 'it-utility-sleep_it_1'") == [
        {"id": "it-utility-sleep_it_1", "goal": "utility-sleep"}
    ]
    assert sql("SELECT id, intent_id, workflow_id, status FROM app.runs WHERE id = 'sleep_it_1'") == [
        {
            "id": "sleep_it_1",
            "intent_id": "it-utility-sleep_it_1",
            "workflow_id": "sleep_it_1",
            "status": "running",
        }
    ]
    row = rt.client.get("sleep_it_1")
    assert (row["name"], row["queue_name"]) == (SLEEP_WORKFLOW, "controlQ")

    done = rt.client.wait("sleep_it_1", 20)
    assert done["status"] == "SUCCESS"
    assert json.loads(done["output"]) == {"success": True, "workflowId": "sleep_it_1", "sleepMs": 800}
    steps = rt.client.steps("sleep_it_1")
    assert [s["function_name"] for s in steps] == [
        "TimeWorkflow.recordWakeMetadata",
        "kodo.sleep",
        "TimeWorkflow.recordWakeMetadata",
    ]
    wake_at = int(json.loads(steps[1]["output"])["wake_at"])
    assert steps[1]["started_at_epoch_ms"] + 800 <= wake_at <= steps[1]["completed_at_epoch_ms"] + 800
    assert steps[2]["started_at_epoch_ms"] >= wake_at  # not before its wake-up time

    arts = artifacts_of(sql, "sleep_it_1")
    # Lab J's oracle: before-sleep, then after-sleep; five rows each (idx 0 the index), task ''.
    assert [(a["step_id"], a["idx"], a["kind"]) for a in arts] == [
        (step, i, kind)
        for step in ("sleep-before-sleep", "sleep-after-sleep")
        for i, kind in enumerate(ARTIFACT_KINDS)
    ]
    assert {(a["task_key"], a["attempt"]) for a in arts} == {("", 1)}
    before, after = arts[0:5], arts[5:10]
    assert max(a["created_at"] for a in before) < min(a["created_at"] for a in after)
    raw = before[2]["inline"]["json"]
    assert (raw["phase"], raw["sleepMs"]) == ("before-sleep", 800)
    assert after[2]["inline"]["json"]["phase"] == "after-sleep"
    assert before[0]["uri"] == "artifact://run/sleep_it_1/step/sleep-before-sleep/task//index.json"
    index = before[0]["inline"]["json"]
    assert [i["uri"] for i in index["items"]] == [a["uri"] for a in before[1:]]
    assert before[0]["sha256"] == sha256_hex(index)
    assert all(len(a["sha256"]) == 64 for a in arts)
    assert after[4]["inline"]["text"].startswith("after-sleep: sleepMs=800 at ")

    # The run's artifacts are served like any other.
    r = http.get("/runs/sleep_it_1")
    assert r.status_code == 200
    assert sorted(a["uri"] for a in body(r)["artifacts"]) == sorted(a["uri"] for a in arts)


def test_a_repeated_sleep_is_the_same_sleep(http: FlaskClient, rt: Runtime, sql: Sql) -> None:
    assert http.post("/api/ops/sleep?wf=sleep_it_2").status_code == 202
    inputs = rt.client.get("sleep_it_2")["inputs"]
    assert "5000" in inputs  # the default
    before = fingerprint(sql)
    r = http.post("/api/ops/sleep?wf=sleep_it_2&sleep=10")  # no worker: still ENQUEUED
    assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowID": "sleep_it_2"})
    assert fingerprint(sql) == before  # nothing new, and its length unchanged
    assert rt.client.get("sleep_it_2")["inputs"] == inputs


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "invalid SleepWorkflowRequest: data must have required property 'wf'"),
        ("?wf=", "invalid SleepWorkflowRequest: data/wf must NOT have fewer than 1 characters"),
        (
            "?wf=&sleep=abc",
            "invalid SleepWorkflowRequest: data/wf must NOT have fewer than 1 characters; "
            "data/sleep must be integer",
        ),
        (
            "?wf=%20%20",
            'invalid SleepWorkflowRequest: data/wf must match pattern "^[A-Za-z0-9][A-Za-z0-9._:-]*$"',
        ),
        (
            "?wf=a/b",
            'invalid SleepWorkflowRequest: data/wf must match pattern "^[A-Za-z0-9][A-Za-z0-9._:-]*$"',
        ),
        ("?wf=" + "x" * 129, "invalid SleepWorkflowRequest: data/wf must NOT have more than 128 characters"),
        ("?wf=ok&sleep=abc", "invalid SleepWorkflowRequest: data/sleep must be integer"),
        ("?wf=ok&sleep=1.5", "invalid SleepWorkflowRequest: data/sleep must be integer"),
        ("?wf=ok&sleep=", "invalid SleepWorkflowRequest: data/sleep must be integer"),
        ("?wf=ok&sleep=0", "invalid SleepWorkflowRequest: data/sleep must be >= 1"),
        ("?wf=ok&sleep=-5", "invalid SleepWorkflowRequest: data/sleep must be >= 1"),
        ("?wf=ok&sleep=86400001", "invalid SleepWorkflowRequest: data/sleep must be <= 86400000"),
        ("?wf=ok&unknown=1", "invalid SleepWorkflowRequest: data must NOT have additional properties"),
        ("?wf=ok&wf=other", "invalid SleepWorkflowRequest: data/wf must be string"),
    ],
)
def test_a_bad_request_is_a_400_and_writes_nothing(
    http: FlaskClient, sql: Sql, query: str, message: str
) -> None:
    before = fingerprint(sql)
    r = http.post(f"/api/ops/sleep{query}")
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert body(r)["error"] == message
    assert body(r)["details"]
    assert fingerprint(sql) == before


def test_an_id_taken_by_another_workflow_or_run_is_a_409_and_writes_nothing(
    http: FlaskClient, rt: Runtime, sql: Sql
) -> None:
    assert http.post("/crashdemo?wf=sleep_it_taken").status_code == 202  # a crash demo holds the id
    intent = body(http.post("/intents", data=json.dumps({"goal": "g", "inputs": {}, "constraints": {}})))[
        "intentId"
    ]
    run = body(http.post(f"/intents/{intent}/run", data=json.dumps({"queuePartitionKey": "t"})))
    before = fingerprint(sql)
    for wid, error in [
        ("sleep_it_taken", "workflow sleep_it_taken already exists as CrashDemoWorkflow"),
        (intent, f"workflow id {intent} belongs to another run"),  # the workflow id of a run
        (run["runId"], f"workflow id {run['runId']} belongs to another run"),  # the id of a run
    ]:
        r = http.post(f"/api/ops/sleep?wf={wid}")
        assert (r.status_code, body(r)) == (409, {"error": error})
        assert fingerprint(sql) == before


def test_the_route_is_in_the_openapi_document(http: FlaskClient) -> None:
    op = body(http.get("/openapi.json"))["paths"]["/api/ops/sleep"]["post"]
    assert [(p["name"], p["required"]) for p in op["parameters"]] == [("wf", True), ("sleep", False)]
    assert set(op["responses"]) == {"202", "400", "409", "413"}  # 413: a POST's body over the limit
