"""The ops plane over HTTP (contract-api §2 rows 18-23, §3.5, §9; §15.2 ops-endpoints, ops-*-semantics).

Routes are driven through the Flask test client against the real Postgres. Workflows run either
in this process (`deliver_until_settled`, as a worker would run them) or, where the runbook
watches a live boundary (cancel during a sleep, resume, fork to SUCCESS), on a real Celery worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from kodo import clock
from kodo.api import create_app
from kodo.intent.canonical import sha256_hex
from kodo.runtime import Runtime
from tests.conftest import effects_of
from tests.support import workflows as t
from tests.support.api import Sql, body, create_intent, fingerprint, post, start_run
from tests.support.helpers import deliver_until_settled, insert_unpublished, poll

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SIX = {
    ("GET", "/api/ops/wf"),
    ("GET", "/api/ops/wf/<workflow_id>"),
    ("GET", "/api/ops/wf/<workflow_id>/steps"),
    ("POST", "/api/ops/wf/<workflow_id>/cancel"),
    ("POST", "/api/ops/wf/<workflow_id>/resume"),
    ("POST", "/api/ops/wf/<workflow_id>/fork"),
}


@pytest.fixture
def app(rt: Runtime) -> Flask:
    return create_app(runtime=rt)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()


def ops_artifacts(sql: Sql, wid: str) -> list[dict[str, Any]]:
    """The OPS audit rows whose target is `wid`, oldest first."""
    return sql(
        "SELECT run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256 FROM app.artifacts "
        "WHERE step_id = 'OPS' AND inline->>'targetWorkflowID' = %s ORDER BY created_at, inline->>'at'",
        (wid,),
    )


def status_of(sql: Sql, wid: str) -> str:
    rows = sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
    return str(rows[0]["status"])


def set_status(sql: Sql, wid: str, status: str) -> None:
    sql("UPDATE dbos.workflow_status SET status = %s WHERE workflow_uuid = %s", (status, wid))


def run_here(rt: Runtime, wf: Any, *args: Any, workflow_id: str) -> None:
    """Start `wf` and run it to its end in this process (no worker)."""
    insert_unpublished(rt, wf, *args, workflow_id=workflow_id)
    deliver_until_settled(rt, workflow_id)
    assert rt.client.get(workflow_id)["status"] == "SUCCESS"


# ---- the surface ------------------------------------------------------------------------------------


def test_exactly_six_ops_routes(app: Flask) -> None:
    """scripts/policy-ops-surface.sh: the six routes, and no seventh under /api/ops/wf."""
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/ops/wf")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert served == SIX


def test_openapi_documents_the_six_routes_and_the_slowstep_proof(http: FlaskClient) -> None:
    doc = body(http.get("/openapi.json"))
    paths = doc["paths"]
    fork = paths["/api/ops/wf/{workflow_id}/fork"]["post"]
    assert fork["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ForkWorkflowRequest"
    }
    assert set(fork["responses"]) == {"202", "400", "404", "409", "413"}
    schemas = doc["components"]["schemas"]
    assert schemas["ForkWorkflowRequest"]["required"] == ["stepN"]
    assert schemas["ForkWorkflowRequest"]["additionalProperties"] is False
    assert "required" not in schemas["CancelWorkflowRequest"]
    listing = paths["/api/ops/wf"]["get"]
    assert [(p["name"], p["required"]) for p in listing["parameters"]] == [
        ("status", False),
        ("name", False),
        ("limit", False),
    ]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/OpsWorkflowSummary"},
    }
    summary = schemas["OpsWorkflowSummary"]
    assert sorted(summary["required"]) == [
        "createdAt",
        "status",
        "workflowClassName",
        "workflowID",
        "workflowName",
    ]
    steps = schemas["WorkflowStepSummary"]
    assert set(steps["properties"]) == {"stepId", "functionId", "status", "startedAt", "completedAt", "error"}
    assert "audit" in schemas["OpsWorkflowDetail"]["required"]
    slow = paths["/slowstep"]["post"]
    assert [(p["name"], p["required"]) for p in slow["parameters"]] == [("wf", True), ("sleep", False)]
    assert "/slowmarks" in paths


# ---- list (§9.1) ------------------------------------------------------------------------------------


@pytest.fixture
def dated(sql: Sql) -> Iterator[list[str]]:
    """Ids of rows a test dates into the future (to be the newest); deleted afterwards, so later
    listings in the same database (the e2e labs) see the present again."""
    ids: list[str] = []
    yield ids
    sql("DELETE FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,))


def _future(sql: Sql, wid: str, created_at: int) -> None:
    sql("UPDATE dbos.workflow_status SET created_at = %s WHERE workflow_uuid = %s", (created_at, wid))


def test_list_is_newest_first_then_by_id_with_default_and_maximum_limits(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str, dated: list[str]
) -> None:
    # Far in the future, so these are the newest rows of the shared test database.
    base = clock.now_ms() + 10 * 365 * 86_400_000
    ids = [f"ls-{version}-{i:02d}" for i in range(25)]
    dated.extend(ids)
    for i, wid in enumerate(ids):
        insert_unpublished(rt, t.four_steps, workflow_id=wid)
        _future(sql, wid, base + 1000 * (i // 2))  # pairs share a created_at: the id breaks the tie
    r = http.get("/api/ops/wf")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    got = [w["workflowID"] for w in body(r)]
    expected = sorted(ids, key=lambda w: (-(ids.index(w) // 2), w))
    assert got == expected[:20]  # the default limit
    assert [w["workflowID"] for w in body(http.get("/api/ops/wf?limit=3"))] == expected[:3]
    assert body(http.get("/api/ops/wf?limit=25")) == body(http.get("/api/ops/wf?limit=25"))  # repeatable
    first = body(r)[0]
    assert first == {
        "workflowID": expected[0],
        "status": "ENQUEUED",
        "workflowName": "four_steps",
        "workflowClassName": "t",
        "queueName": "intentQ",
        "applicationVersion": version,
        "createdAt": base + 12_000,
        "updatedAt": first["updatedAt"],
    }
    assert isinstance(first["updatedAt"], int)


def test_list_filters_by_status_and_by_name_or_its_last_part(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str, dated: list[str]
) -> None:
    base = clock.now_ms() + 20 * 365 * 86_400_000
    failed, ok = f"lf-{version}-err", f"lf-{version}-ok"
    dated.extend([failed, ok])
    for i, wid in enumerate((failed, ok)):
        insert_unpublished(rt, t.four_steps, workflow_id=wid)
        _future(sql, wid, base + i)
    set_status(sql, failed, "ERROR")
    errors = body(http.get("/api/ops/wf?status=ERROR&limit=200"))
    assert failed in [w["workflowID"] for w in errors] and ok not in [w["workflowID"] for w in errors]
    assert {w["status"] for w in errors} == {"ERROR"}
    for name in ("four_steps", "t.four_steps"):
        rows = body(http.get(f"/api/ops/wf?name={name}&limit=2"))
        assert [w["workflowID"] for w in rows] == [ok, failed], name
    assert body(http.get("/api/ops/wf?name=steps&limit=200")) == []  # a suffix, not a dotted part
    both = body(http.get("/api/ops/wf?status=ENQUEUED&name=four_steps&limit=1"))
    assert [w["workflowID"] for w in both] == [ok]


def test_list_never_fails_on_its_own_data(
    http: FlaskClient, sql: Sql, version: str, dated: list[str]
) -> None:
    """spec/README defect 2: every row is a workflow, and a blank or unknown name still lists."""
    base = clock.now_ms() + 30 * 365 * 86_400_000
    odd = [
        (f"odd-{version}-blank", "", None, ""),
        (f"odd-{version}-unknown", "no.such.Workflow", None, "intentQ"),
        (f"odd-{version}-class", "notify", "Klass", "controlQ"),
        (f"odd-{version}-dot", "trailing.", "", "controlQ"),
    ]
    dated.extend(wid for wid, *_ in odd)
    for i, (wid, name, class_name, queue) in enumerate(odd):
        sql(
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, class_name, queue_name, "
            "application_version, inputs, created_at, updated_at) "
            "VALUES (%s, 'SUCCESS', %s, %s, %s, '', '{}', %s, %s)",
            (wid, name, class_name, queue, base + i, base + i),
        )
    r = http.get("/api/ops/wf?limit=4")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert {w["workflowID"]: (w["workflowName"], w["workflowClassName"]) for w in body(r)} == {
        odd[0][0]: (odd[0][0], odd[0][0]),
        odd[1][0]: ("Workflow", "no.such"),
        odd[2][0]: ("notify", "Klass"),
        odd[3][0]: (odd[3][0], "trailing"),
    }
    blank = next(w for w in body(r) if w["workflowID"] == odd[0][0])
    assert "queueName" not in blank and "applicationVersion" not in blank
    detail = http.get(f"/api/ops/wf/{odd[0][0]}")
    assert detail.status_code == 200 and body(detail)["audit"] == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("unknown=1", "data must NOT have additional properties"),
        ("limit=abc", "data/limit must be integer"),
        ("limit=0", "data/limit must be >= 1"),
        ("limit=", "data/limit must be >= 1"),
        ("limit=-1", "data/limit must be >= 1"),
        ("limit=201", "data/limit must be <= 200"),
        ("limit=1.5", "data/limit must be integer"),
        ("limit=1_0", "data/limit must be integer"),
        ("status=RUNNING", "data/status must be equal to one of the allowed values"),
        ("status=ERROR&status=SUCCESS", "data/status"),
    ],
)
def test_list_rejects_a_bad_query(http: FlaskClient, query: str, reason: str) -> None:
    r = http.get(f"/api/ops/wf?{query}")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert body(r)["error"].startswith("invalid ListWorkflowsQuery: ") and reason in body(r)["error"]
    assert body(r)["details"]


def test_list_reads_limit_as_a_number(http: FlaskClient) -> None:
    assert http.get("/api/ops/wf?limit=2.0").status_code == 200
    assert len(body(http.get("/api/ops/wf?limit=%202%20"))) <= 2


# ---- get and steps (§9.2, §9.3) -----------------------------------------------------------------------


def test_get_and_steps_of_a_finished_slowstep(rt: Runtime, http: FlaskClient, sql: Sql, version: str) -> None:
    from kodo.demo.slowstep import slow_step

    wid = f"gs-{version}"
    run_here(rt, slow_step, wid, 10, workflow_id=wid)
    got = body(http.get(f"/api/ops/wf/{wid}"))
    assert {
        k: got[k] for k in ("workflowID", "status", "workflowName", "workflowClassName", "queueName")
    } == {
        "workflowID": wid,
        "status": "SUCCESS",
        "workflowName": "SlowStepWorkflow",
        "workflowClassName": "SlowStepWorkflow",
        "queueName": "controlQ",
    }
    assert got["audit"] == []
    steps = body(http.get(f"/api/ops/wf/{wid}/steps"))
    assert [(s["functionId"], s["stepId"], s["status"]) for s in steps] == [
        (0, "step1", "SUCCESS"),
        (1, "kodo.sleep", "SUCCESS"),
        (2, "step2", "SUCCESS"),
    ]
    assert all(set(s) == {"stepId", "functionId", "status", "startedAt", "completedAt"} for s in steps)
    assert all(isinstance(s["startedAt"], int) and s["completedAt"] >= s["startedAt"] for s in steps)
    # A GET writes nothing, even for a workflow with no run (no synthetic rows, unlike HEAD).
    assert sql("SELECT count(*) AS n FROM app.runs WHERE id = %s", (wid,))[0]["n"] == 0


def test_a_recorded_step_error_is_an_error_step(rt: Runtime, http: FlaskClient, version: str) -> None:
    wid = f"ge-{version}"
    run_here(rt, t.catcher, "boom", workflow_id=wid)
    steps = body(http.get(f"/api/ops/wf/{wid}/steps"))
    assert [(s["functionId"], s["stepId"], s["status"]) for s in steps] == [
        (0, "t.raising", "ERROR"),
        (1, "t.plain_effect", "SUCCESS"),
    ]
    assert steps[0]["error"] == "tests.support.workflows.StepBoomError: boom"
    assert "error" not in steps[1]


@pytest.mark.parametrize("suffix", ["", "/steps"])
def test_an_unknown_workflow_is_a_404(http: FlaskClient, suffix: str) -> None:
    r = http.get(f"/api/ops/wf/no-such-wf{suffix}")
    assert (r.status_code, body(r)) == (404, {"error": "workflow not found: no-such-wf"})


# ---- cancel, resume, fork with their audit (§9.4-9.7), on a real worker --------------------------------


def test_cancel_resume_fork_of_a_slowstep_with_one_audit_row_per_accepted_action(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str, start_worker: Callable[..., Any]
) -> None:
    wid = f"slow-{version}"
    r = http.post(f"/slowstep?wf={wid}&sleep=1500")
    assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowId": wid})
    start_worker()
    poll(lambda: body(http.get(f"/slowmarks?wf={wid}"))["s1"] == 1, 30, "s1")

    r = post(http, f"/api/ops/wf/{wid}/cancel", {"actor": "qa", "reason": "boundary-proof"})
    assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowID": wid})
    assert body(http.get(f"/api/ops/wf/{wid}"))["status"] == "CANCELLED"
    time.sleep(2.0)  # past the sleep's wake time: a cancel is a boundary, so step2 never runs
    assert body(http.get(f"/slowmarks?wf={wid}")) == {"s1": 1, "s2": 0}
    assert status_of(sql, wid) == "CANCELLED"

    check_cancel_audit(sql, wid)
    check_resume_and_guards(http, sql, wid)
    check_fork_and_audit_trail(http, sql, wid)


def check_cancel_audit(sql: Sql, wid: str) -> None:
    [cancel] = ops_artifacts(sql, wid)
    inline = cancel["inline"]
    assert set(inline) == {"op", "targetWorkflowID", "at", "actor", "reason"}
    assert (inline["op"], inline["targetWorkflowID"], inline["actor"], inline["reason"]) == (
        "cancel",
        wid,
        "qa",
        "boundary-proof",
    )
    assert ISO_MS.match(inline["at"])
    assert (cancel["run_id"], cancel["step_id"], cancel["idx"], cancel["attempt"], cancel["kind"]) == (
        wid,
        "OPS",
        0,
        1,
        "json_diagnostic",
    )
    assert cancel["sha256"] == sha256_hex(inline)
    assert cancel["task_key"].startswith(f"op-intent:cancel:{cancel['sha256']}:")
    assert cancel["uri"] == f"artifact://run/{wid}/step/OPS/task/{cancel['task_key']}/op-intent-cancel.json"
    # No run had the workflow: the synthetic intent and run of §9.7.
    assert sql("SELECT goal, payload FROM app.intents WHERE id = %s", (f"it-ops-{wid}",)) == [
        {"goal": "ops-workflow-control", "payload": {"inputs": {}, "constraints": {}}}
    ]
    assert sql("SELECT intent_id, workflow_id, status FROM app.runs WHERE id = %s", (wid,)) == [
        {"intent_id": f"it-ops-{wid}", "workflow_id": wid, "status": "running"}
    ]


def check_resume_and_guards(http: FlaskClient, sql: Sql, wid: str) -> None:
    before = fingerprint(sql)
    again = post(http, f"/api/ops/wf/{wid}/cancel", {})
    assert (again.status_code, body(again)) == (409, {"error": "cannot cancel workflow in status CANCELLED"})
    assert fingerprint(sql) == before

    r = post(http, f"/api/ops/wf/{wid}/resume", {"actor": "qa", "reason": "continue"})
    assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowID": wid})
    poll(lambda: status_of(sql, wid) == "SUCCESS", 30, "SUCCESS after resume")
    assert body(http.get(f"/slowmarks?wf={wid}")) == {"s1": 1, "s2": 1}
    assert [s["stepId"] for s in body(http.get(f"/api/ops/wf/{wid}/steps"))] == [
        "step1",
        "kodo.sleep",
        "step2",
    ]

    before = fingerprint(sql)
    for verb in ("cancel", "resume"):
        r = post(http, f"/api/ops/wf/{wid}/{verb}", {})
        assert (r.status_code, body(r)) == (409, {"error": f"cannot {verb} workflow in status SUCCESS"})
    r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": 99999})  # seed 001 lab G's probe
    assert (r.status_code, body(r)) == (409, {"error": "fork stepN 99999 exceeds max step 2"})
    r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": 3})
    assert (r.status_code, body(r)) == (409, {"error": "fork stepN 3 exceeds max step 2"})
    assert fingerprint(sql) == before


def check_fork_and_audit_trail(http: FlaskClient, sql: Sql, wid: str) -> None:
    r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": 2, "actor": "qa", "reason": "fork-proof"})
    assert r.status_code == 202, body(r)
    forked = body(r)["forkedWorkflowID"]
    assert body(r) == {"accepted": True, "workflowID": wid, "forkedWorkflowID": forked}
    assert UUID.match(forked) and forked != wid
    poll(lambda: status_of(sql, forked) == "SUCCESS", 30, "the fork's SUCCESS")
    fork_steps = body(http.get(f"/api/ops/wf/{forked}/steps"))
    assert [(s["functionId"], s["stepId"]) for s in fork_steps] == [
        (0, "step1"),
        (1, "kodo.sleep"),
        (2, "step2"),
    ]
    assert body(http.get(f"/slowmarks?wf={forked}")) == {"s1": 0, "s2": 0}  # it marks the original's id

    rows = ops_artifacts(sql, wid)
    assert [r["inline"]["op"] for r in rows] == ["cancel", "resume", "fork"]
    assert rows[2]["inline"]["forkedWorkflowID"] == forked
    assert len({r["task_key"] for r in rows}) == 3 and {r["run_id"] for r in rows} == {wid}
    audit = body(http.get(f"/api/ops/wf/{wid}"))["audit"]
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [
        ("fork", "qa", "fork-proof"),
        ("resume", "qa", "continue"),
        ("cancel", "qa", "boundary-proof"),
    ]
    assert audit[0]["forkedWorkflowID"] == forked and "forkedWorkflowID" not in audit[1]
    assert all(a["targetWorkflowID"] == wid and ISO_MS.match(a["at"]) for a in audit)
    # The fork's own detail shows the action that created it.
    fork_detail = body(http.get(f"/api/ops/wf/{forked}"))
    assert [(a["op"], a["targetWorkflowID"], a["forkedWorkflowID"]) for a in fork_detail["audit"]] == [
        ("fork", wid, forked)
    ]


# ---- in-process state guards and audits (no worker) ----------------------------------------------------


def test_cancel_and_resume_of_a_queued_workflow_default_actor_and_reason(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    wid = f"q-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    assert post(http, f"/api/ops/wf/{wid}/resume", raw="").status_code == 202  # ENQUEUED resumes (§9.5)
    assert status_of(sql, wid) == "ENQUEUED"
    assert post(http, f"/api/ops/wf/{wid}/cancel", raw="  ").status_code == 202  # whitespace is {}
    assert status_of(sql, wid) == "CANCELLED"
    assert post(http, f"/api/ops/wf/{wid}/resume", {"actor": None, "reason": None}).status_code == 202
    assert status_of(sql, wid) == "ENQUEUED"
    rows = ops_artifacts(sql, wid)
    assert [set(r["inline"]) for r in rows] == [{"op", "targetWorkflowID", "at"}] * 3
    audit = body(http.get(f"/api/ops/wf/{wid}"))["audit"]
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [
        ("resume", "system", "-"),
        ("cancel", "system", "-"),
        ("resume", "system", "-"),
    ]


def test_actions_within_one_millisecond_each_get_their_own_audit_row(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wid = f"ms-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    frozen = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: frozen)
    for verb in ("cancel", "resume", "cancel", "resume"):
        assert post(http, f"/api/ops/wf/{wid}/{verb}", {"actor": "a"}).status_code == 202
    rows = ops_artifacts(sql, wid)
    assert len(rows) == 4 and len({r["task_key"] for r in rows}) == 4
    assert len({r["inline"]["at"] for r in rows}) == 1


def test_resume_of_a_workflow_out_of_recovery_attempts_is_a_409_though_the_engine_could(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    wid = f"mrae-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    for status in ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", "ERROR", "SUCCESS", "PENDING"):
        set_status(sql, wid, status)
        before = fingerprint(sql)
        r = post(http, f"/api/ops/wf/{wid}/resume", {"actor": "qa"})
        assert (r.status_code, body(r)) == (409, {"error": f"cannot resume workflow in status {status}"})
        assert fingerprint(sql) == before
    set_status(sql, wid, "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    rt.client.resume(wid)  # the engine's own client does resume it
    assert status_of(sql, wid) == "ENQUEUED"


def test_fork_reuses_the_operations_before_step_n(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    """Fork caching: operations before stepN are copied, not run again (effects counted per run)."""
    wid = f"fk-{version}"
    run_here(rt, t.effects, 4, workflow_id=wid)
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}
    assert [s["functionId"] for s in body(http.get(f"/api/ops/wf/{wid}/steps"))] == [0, 1, 2, 3]
    for step_n, ran in ((3, {"e3": 1}), (1, {"e1": 1, "e2": 1, "e3": 1})):
        r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": step_n, "appVersion": version})
        assert r.status_code == 202, body(r)
        forked = body(r)["forkedWorkflowID"]
        deliver_until_settled(rt, forked)
        assert status_of(sql, forked) == "SUCCESS"
        assert effects_of(sql, forked) == ran, step_n
        assert json.loads(rt.client.get(forked)["output"]) == ["e0", "e1", "e2", "e3"]
        row = sql(
            "SELECT forked_from, application_version FROM dbos.workflow_status WHERE workflow_uuid = %s",
            (forked,),
        )[0]
        assert row == {"forked_from": wid, "application_version": version}
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}  # the original is untouched


def test_fork_onto_another_version_and_of_a_workflow_without_steps(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    wid = f"fv-{version}"
    run_here(rt, t.four_steps, workflow_id=wid)
    r = post(http, f"/api/ops/wf/{wid}/fork", {"stepN": 1, "appVersion": "v-elsewhere"})
    assert r.status_code == 202
    row = sql(
        "SELECT status, application_version FROM dbos.workflow_status WHERE workflow_uuid = %s",
        (body(r)["forkedWorkflowID"],),
    )[0]
    assert row == {"status": "ENQUEUED", "application_version": "v-elsewhere"}  # waits for its version
    empty = f"fe-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=empty)
    r = post(http, f"/api/ops/wf/{empty}/fork", {"stepN": 1})
    assert (r.status_code, body(r)) == (409, {"error": "fork stepN 1 exceeds max step 0"})


def test_cancel_of_an_intent_run_audits_on_its_run(http: FlaskClient, sql: Sql) -> None:
    """The audit joins the run whose workflow it is, and shows in that run's RunView artifacts."""
    intent = create_intent(http)
    run_id = start_run(http, intent)["runId"]
    r = post(http, f"/api/ops/wf/{intent}/cancel", {"actor": "fde", "reason": "stalled"})
    assert r.status_code == 202, body(r)
    [row] = ops_artifacts(sql, intent)
    assert row["run_id"] == run_id
    assert sql("SELECT count(*) AS n FROM app.intents WHERE id = %s", (f"it-ops-{intent}",))[0]["n"] == 0
    view = body(http.get(f"/runs/{run_id}"))
    assert view["status"] == "canceled"
    assert [a["kind"] for a in view["artifacts"] if a["uri"] and "/step/OPS/" in a["uri"]] == [
        "json_diagnostic"
    ]


# ---- rejections write nothing (§1.5) --------------------------------------------------------------------

BAD_BODIES = ["{bad", "[1,", "[]", '"s"', "1", "null", "true", json.dumps({"extra": True})]
BAD_FORKS = [
    *BAD_BODIES,
    "{}",
    json.dumps({"stepN": "bad", "extra": True}),
    json.dumps({"stepN": 0}),
    json.dumps({"stepN": -1}),
    json.dumps({"stepN": 1.5}),
    json.dumps({"stepN": True}),
    json.dumps({"stepN": 1, "appVersion": ""}),
    json.dumps({"stepN": 1, "actor": 1}),
    json.dumps({"stepN": 1, "reason": ["x"]}),
]


def test_every_rejected_ops_request_writes_nothing(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    done = f"zw-done-{version}"
    run_here(rt, t.four_steps, workflow_id=done)
    queued = f"zw-queued-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=queued)
    cases: list[tuple[str, str, str, int, str]] = []
    for wid in (done, queued, "zw-missing"):
        for verb in ("cancel", "resume"):
            for raw in BAD_BODIES:
                schema = (
                    "invalid json"
                    if raw[:2] in ("{b", "[1")
                    else f"invalid {verb.capitalize()}WorkflowRequest"
                )
                cases.append(("POST", f"/api/ops/wf/{wid}/{verb}", raw, 400, schema))
        for raw in BAD_FORKS:
            schema = "invalid json" if raw[:2] in ("{b", "[1") else "invalid ForkWorkflowRequest"
            cases.append(("POST", f"/api/ops/wf/{wid}/fork", raw, 400, schema))
    for verb in ("cancel", "resume"):
        cases.append(("POST", f"/api/ops/wf/zw-missing/{verb}", "{}", 404, "workflow not found: zw-missing"))
    cases += [
        ("POST", "/api/ops/wf/zw-missing/fork", '{"stepN":1}', 404, "workflow not found: zw-missing"),
        ("POST", f"/api/ops/wf/{done}/cancel", '{"actor":"a","reason":"r"}', 409, "cannot cancel workflow"),
        ("POST", f"/api/ops/wf/{done}/resume", '{"actor":"a"}', 409, "cannot resume workflow"),
        ("POST", f"/api/ops/wf/{done}/fork", '{"stepN":4}', 409, "fork stepN 4 exceeds max step 3"),
        ("POST", f"/api/ops/wf/{queued}/fork", '{"stepN":1}', 409, "fork stepN 1 exceeds max step 0"),
        ("GET", "/api/ops/wf?unknown=1", "", 400, "invalid ListWorkflowsQuery"),
        ("GET", "/api/ops/wf/zw-missing", "", 404, "workflow not found"),
        ("GET", f"/api/ops/wf/{done}", "", 200, ""),
        ("GET", f"/api/ops/wf/{queued}/steps", "", 200, ""),
        ("PUT", f"/api/ops/wf/{done}/cancel", "{}", 404, "not found"),
        ("GET", f"/api/ops/wf/{done}/cancel", "", 404, "not found"),
        ("POST", f"/api/ops/wf/{done}/pause", "{}", 404, "not found"),
        ("POST", "/slowstep", "", 400, "wf query param required"),
        ("POST", "/slowstep?wf=%20", "", 400, "wf query param required"),
        ("POST", f"/slowstep?wf=zw-slow-{version}&sleep=abc", "", 400, "sleep query param"),
        ("POST", f"/slowstep?wf=zw-slow-{version}&sleep=-5", "", 400, "sleep query param"),
        ("POST", f"/slowstep?wf=zw-slow-{version}&sleep=1.5", "", 400, "sleep query param"),
        ("POST", f"/slowstep?wf=zw-slow-{version}&sleep=86400001", "", 400, "sleep query param"),
        ("GET", "/slowmarks", "", 400, "wf query param required"),
    ]
    failures: list[str] = []
    for method, url, raw, status, error in cases:
        before = fingerprint(sql)
        r = http.open(url, method=method, data=raw)
        label = f"{method} {url} {raw!r}"
        if r.status_code != status:
            failures.append(f"{label}: {r.status_code} {r.get_data(as_text=True)}, expected {status}")
        elif status >= 400 and not body(r)["error"].startswith(error):
            failures.append(f"{label}: error {body(r)['error']!r}, expected {error!r}...")
        changed = sorted(k for k, v in fingerprint(sql).items() if before.get(k) != v)
        if changed:
            failures.append(f"{label}: wrote to {changed}")
    assert failures == [], "\n".join(failures)
    assert len(cases) > 100
    assert (status_of(sql, done), status_of(sql, queued)) == ("SUCCESS", "ENQUEUED")


def test_an_accepted_action_does_write_its_audit(
    rt: Runtime, http: FlaskClient, sql: Sql, version: str
) -> None:
    """The zero-write oracle can see the audit: an accepted cancel moves exactly these tables."""
    wid = f"aw-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    before = fingerprint(sql)
    assert post(http, f"/api/ops/wf/{wid}/cancel", {"actor": "qa"}).status_code == 202
    after = fingerprint(sql)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"app.artifacts", "app.intents", "app.runs", "dbos.workflow_status"}
    assert after["app.artifacts"][0] == before["app.artifacts"][0] + 1


def test_slowstep_takes_sleep_ms_and_is_idempotent_by_id(http: FlaskClient, sql: Sql, version: str) -> None:
    wid = f"ss-{version}"
    for _ in range(2):
        r = http.post(f"/slowstep?wf={wid}&sleep=250")
        assert (r.status_code, body(r)) == (202, {"accepted": True, "workflowId": wid})
    rows = sql("SELECT name, queue_name, inputs FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
    assert [(r["name"], r["queue_name"], json.loads(r["inputs"])["args"]) for r in rows] == [
        ("SlowStepWorkflow", "controlQ", [wid, 250])
    ]
    default = f"ssd-{version}"
    assert http.post(f"/slowstep?wf={default}").status_code == 202
    inputs = sql("SELECT inputs FROM dbos.workflow_status WHERE workflow_uuid = %s", (default,))[0]["inputs"]
    assert json.loads(inputs)["args"] == [default, 5000]
    assert body(http.get(f"/slowmarks?wf={wid}")) == {"s1": 0, "s2": 0}
