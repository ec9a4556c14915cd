"""The operators' runbooks, run automatically against the live system (OC_MODE=replay SBX_MODE=mock).

Each test is one lab, translated from shell (curl + jq + psql) to Python (requests + SQL) with the
same request bodies and the same pass criteria:

* seed 000 (spec 005 field manual): L02 happy path, L03 fail-closed ingress, L04 zero-write guard,
  L05 HITL + approval, L06 repair envelope, L14 golden task;
* seed 001 (spec 007 control plane): lab B golden product flow, C approve-plan, D step timeline and
  artifact fetch, I fail-closed matrix with zero writes;
* seed 004 (spec 003 course): walkthroughs B, D, E, F. That runbook predates the partition law and
  the plan gate (spec/README): its run bodies get a `queuePartitionKey` and its runs are approved at
  `waiting_input`. The bodies exactly as written are checked to be refused with zero writes.

Where a runbook only prints a value, the assertion is the contract's (contract-api section noted).
The SQL oracle pack at the end uses the corrected oracles of spec/README ("Seed oracle defects").
Labs share one module-wide system, like the runbooks' single terminal session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from ops.testrun import REPO, pytest_args
from tests.e2e.live import HEADER_STATUSES, STEPS, Json, LiveSystem, step_ids

# seed 000 L02 / L04 bodies
L02_RUN = {
    "traceId": "demo-trace",
    "queueName": "intentQ",
    "recipeName": "sandbox-default",
    "queuePartitionKey": "tenant-demo",
    "workload": {"concurrency": 2, "steps": 3, "sandboxMinutes": 2},
}
L04_CAP = {
    "queueName": "intentQ",
    "recipeName": "sandbox-default",
    "queuePartitionKey": "tenant-demo",
    "workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1},
}
TERMINAL_HEADER = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """Shell variables the runbooks carry from one lab to the next ($I, $INTENT, $WID ...)."""
    return {}


@pytest.fixture(scope="module")
def demo_intent(live_system: LiveSystem, shared: dict[str, Any]) -> str:
    """seed 000 L02: I=$(new_intent '{"goal":"demo","inputs":{},"constraints":{}}')."""
    if "I" not in shared:
        shared["I"] = live_system.new_intent({"goal": "demo", "inputs": {}, "constraints": {}})
    intent_id: str = shared["I"]
    return intent_id


def _error(r: Any) -> Json:
    assert r.headers["content-type"] == "application/json", r.headers
    body: Json = r.json()
    assert isinstance(body.get("error"), str), body
    return body


# ---- seed 000 ---------------------------------------------------------------------------------------


def test_l02_happy_path_monolith(live_system: LiveSystem, demo_intent: str) -> None:
    sut = live_system
    r = sut.get("/healthz")
    assert r.json()["ok"] is True
    i = demo_intent
    r = sut.new_run(i, L02_RUN)
    assert r.status_code == 202, r.text
    run_id = r.json()["runId"]
    sut.wait_status(run_id, "waiting_input")
    r = sut.post(f"/runs/{run_id}/approve-plan", {"approvedBy": "po-demo"})
    assert r.status_code == 202, r.text
    view = sut.wait_status(run_id, "succeeded")
    # Pass: status=succeeded, lastStep=ExecuteST, workflowId equals intentId.
    assert view["status"] == "succeeded"
    assert view["lastStep"] == "ExecuteST"
    assert view["workflowId"] == i
    assert view["runId"] == run_id
    assert view["retryCount"] == 0
    assert step_ids(view) == STEPS


def test_l03_fail_closed_ingress(live_system: LiveSystem, demo_intent: str) -> None:
    sut = live_system
    probes: list[tuple[str, Json | None, str | None]] = [
        ("/intents", None, "{bad"),
        ("/intents", {"inputs": {}, "constraints": {}}, None),
        (f"/intents/{demo_intent}/run", {"unknownField": "x"}, None),
    ]
    bodies = []
    for path, body, raw in probes:
        first = sut.post(path, body, raw=raw)
        again = sut.post(path, body, raw=raw)
        # Pass: all 400, deterministic JSON errors.
        assert first.status_code == 400, (path, first.status_code, first.text)
        assert again.status_code == 400
        assert _error(first) == _error(again), "the same bad request must give the same error"
        bodies.append(first.json())
    bad_json, bad_intent, bad_run = bodies
    assert bad_json == {"error": "invalid json"}  # contract-api §1.3
    assert "Intent" in bad_intent["error"] and "details" in bad_intent
    assert "RunRequest" in bad_run["error"] and "details" in bad_run


def test_l04_zero_write_guard_on_reject(live_system: LiveSystem, demo_intent: str) -> None:
    sut = live_system
    before = sut.sql_app("SELECT COUNT(*) FROM app.runs;")
    r = sut.new_run(demo_intent, L04_CAP)
    after = sut.sql_app("SELECT COUNT(*) FROM app.runs;")
    assert before.isdigit(), before
    # Pass: 400 with code=queue_policy_violation; before==after.
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "queue_policy_violation"
    assert before == after
    assert r.json()["error"] == "recipe cap exceeded: concurrency 999 > 20"  # contract-api §5.2


def test_l05_hitl_and_approval_contract(live_system: LiveSystem) -> None:
    sut = live_system
    i_ask = sut.new_intent({"goal": "ask user for approval", "inputs": {}, "constraints": {}})
    r_ask = sut.start_run(
        i_ask, {"queueName": "intentQ", "recipeName": "sandbox-default", "queuePartitionKey": "ask-tenant"}
    )
    sut.wait_status(r_ask, "waiting_input")
    r = sut.post(f"/runs/{r_ask}/events", {"type": "input", "payload": {"answer": "yes"}})
    assert (r.status_code, r.json()) == (202, {"accepted": True})
    sut.wait_status(r_ask, "waiting_input")
    r = sut.post(f"/runs/{r_ask}/approve-plan", {"approvedBy": "qa"})
    assert r.status_code == 202, r.text
    # Pass: /events accepted only in waiting_input; run converges after approve.
    view = sut.wait_status(r_ask, "succeeded")
    assert step_ids(view) == STEPS
    r = sut.post(f"/runs/{r_ask}/events", {"type": "input", "payload": {"answer": "late"}})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "cannot send event to run in status succeeded", "status": "succeeded"}


def test_l06_repair_envelope(live_system: LiveSystem) -> None:
    sut = live_system
    i_f = sut.new_intent({"goal": "fail me", "inputs": {}, "constraints": {}})
    r_f = sut.start_run(
        i_f, {"queueName": "intentQ", "recipeName": "sandbox-default", "queuePartitionKey": "repair-tenant"}
    )
    sut.wait_status(r_f, "waiting_input")
    r = sut.post(f"/runs/{r_f}/approve-plan", {"approvedBy": "qa"})
    assert r.status_code == 202, r.text
    view = sut.wait_status(r_f, "retries_exceeded")
    # {status,nextAction,lastStep,retryCount,error}: the contract's values (§7.1, §7.3).
    assert view["nextAction"] == "REPAIR"
    assert view["retryCount"] == 0
    assert view["error"] == "SBX execution failed [CMD_NONZERO]"
    r = sut.post(f"/runs/{r_f}/retry")
    # Pass: retry envelope {accepted:true,newRunId:<same>,fromStep:"ExecuteST"}.
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": True, "newRunId": r_f, "fromStep": "ExecuteST"}


def test_l14_golden_task_runs_the_run_view_golden_test() -> None:
    """`mise run test:e2e:file test/e2e/run-view-golden.test.ts` reaches kodo's golden test."""
    args = pytest_args(["test/e2e/run-view-golden.test.ts"], "tests/e2e", need_file=True)
    assert args == ["tests/e2e/test_run_view_golden.py"]
    assert (REPO / args[0]).is_file()


# ---- seed 001 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_b(live_system: LiveSystem, shared: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Lab B's $INTENT and $WID (created by the lab B test, read by C, D and I)."""
    yield shared.setdefault("lab_b", {})


def test_lab_b_golden_product_flow(live_system: LiveSystem, lab_b: dict[str, Any]) -> None:
    sut = live_system
    r = sut.post("/api/intents", {"goal": "spec07 golden", "inputs": {}, "constraints": {}})
    assert r.status_code == 201, r.text
    intent = r.json()["intentId"]
    r = sut.post(
        "/api/runs",
        {
            "intentId": intent,
            "queueName": "intentQ",
            "queuePartitionKey": "tenant-007",
            "recipeName": "sandbox-default",
            "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
        },
    )
    assert r.status_code == 202, r.text  # contract-api §2 #13 (S7)
    wid = r.json()["workflowID"]
    lab_b.update(INTENT=intent, WID=wid)
    r = sut.get(f"/api/runs/{wid}")
    assert r.status_code == 200, r.text
    header = r.json()
    # Expect: workflowID==INTENT, status in header enum.
    assert wid == intent
    assert header["workflowID"] == intent
    assert header["status"] in HEADER_STATUSES
    assert {"workflowID", "status", "nextAction", "lastStep"} <= set(header)


def test_lab_c_hitl_approve_plan(live_system: LiveSystem, lab_b: dict[str, Any]) -> None:
    sut = live_system
    wid = lab_b["WID"]
    header = sut.wait_header(wid, lambda h: h.get("nextAction") == "APPROVE_PLAN", "nextAction APPROVE_PLAN")
    assert header["status"] == "WAITING_INPUT"  # spec/README decisions: waiting_input -> WAITING_INPUT
    r = sut.post(f"/api/runs/{wid}/approve-plan", {"approvedBy": "po-007", "notes": "ship it"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] is True and isinstance(body["runId"], str) and body["approvedAt"]
    header = sut.wait_header(wid, lambda h: h.get("status") in TERMINAL_HEADER, "a terminal status")
    # Expect terminal SUCCESS for golden run.
    assert header["status"] == "SUCCESS", header
    assert header["lastStep"] == "ExecuteST"
    assert "error" not in header


def test_lab_d_step_timeline_and_artifact_fetch(live_system: LiveSystem, lab_b: dict[str, Any]) -> None:
    sut = live_system
    wid = lab_b["WID"]
    r = sut.get(f"/api/runs/{wid}/steps")
    assert r.status_code == 200, r.text
    steps = r.json()
    timeline = [
        {
            "stepID": s["stepID"],
            "attempt": s["attempt"],
            "startedAt": s["startedAt"],
            "artifacts": len(s["artifactRefs"]),
        }
        for s in steps
    ]
    # Expect stable step order (startedAt, then stepID) ...
    assert timeline == sorted(timeline, key=lambda s: (s["startedAt"], s["stepID"]))
    assert [s["stepID"] for s in steps] == STEPS, timeline
    assert sut.get(f"/api/runs/{wid}/steps").json() == steps, "the timeline must be stable across reads"
    # ... artifact resolves by encoded id.
    art = next(ref for s in steps for ref in s["artifactRefs"])["id"]
    r = sut.get(f"/api/artifacts/{quote(art, safe='')}")
    assert r.status_code == 200, (art, r.status_code, r.text)
    assert r.content
    assert sut.get(f"/api/runs/run_missing_{wid}/steps").status_code == 404  # spec/README decisions


def test_lab_i_fail_closed_matrix_and_zero_writes(live_system: LiveSystem, lab_b: dict[str, Any]) -> None:
    sut = live_system
    intent = lab_b["INTENT"]

    def counts() -> str:
        # The lab's query concatenates the bare counts (bigint || bigint), which Postgres has no
        # operator for: as written it errors and compares two empty strings. Cast, with a separator.
        return sut.sql_app(
            "SELECT (SELECT COUNT(*) FROM app.intents)::text||'/'||(SELECT COUNT(*) FROM app.runs)"
            "||'/'||(SELECT COUNT(*) FROM app.artifacts)"
        )

    before = counts()
    assert all(n.isdigit() for n in before.split("/")) and int(before.split("/")[1]) > 0, before
    r = sut.post("/api/intents", raw="{bad")
    assert r.status_code == 400, r.text
    assert counts() == before  # first probe keeps counts unchanged

    r = sut.post("/api/runs", {"intentId": intent, "queuePartitionKey": "tenant-007", "extra": True})
    assert r.status_code == 400, r.text
    assert "RunRequest" in _error(r)["error"]
    assert counts() == before

    r = sut.post(
        "/api/runs",
        {
            "intentId": intent,
            "queueName": "sbxQ",
            "recipeName": "sandbox-default",
            "workload": {"concurrency": 1, "steps": 1, "sandboxMinutes": 1},
            "queuePartitionKey": "tenant-007",
        },
    )
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "queue_policy_violation"
    assert r.json()["error"] == "parent intent workflow must use intentQ (got sbxQ)"  # contract-api §5.2
    assert counts() == before


# ---- seed 004 (with a partition key and the plan approval) ------------------------------------------


def test_seed004_bodies_without_partition_key_are_refused_with_zero_writes(live_system: LiveSystem) -> None:
    """Walkthroughs B, C, E, F as written: 400 queue_policy_violation, nothing written (contract §14.1)."""
    sut = live_system
    intent = sut.new_intent({"goal": "demo chain", "inputs": {}, "constraints": {}})
    before = sut.counts("runs", "artifacts")
    for body in (
        {
            "traceId": "po-demo",
            "recipeName": "compile-default",
            "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
        },
        {"traceId": "idem"},
        {},
    ):
        r = sut.new_run(intent, body)
        assert r.status_code == 400, (body, r.text)
        assert _error(r)["code"] == "queue_policy_violation"
        assert "queuePartitionKey is required" in r.json()["error"]
    assert sut.counts("runs", "artifacts") == before
    assert sut.scalar("SELECT COUNT(*) FROM app.runs WHERE intent_id = %s", (intent,)) == 0


def test_seed004_b_happy_path_dual_read_stable_timeline(live_system: LiveSystem) -> None:
    sut = live_system
    i1 = sut.new_intent({"goal": "demo chain", "inputs": {}, "constraints": {}})
    r1 = sut.start_run(
        i1,
        {
            "traceId": "po-demo",
            "recipeName": "compile-default",
            "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
            "queuePartitionKey": "tenant-004",
        },
    )
    w1 = sut.view(r1)["workflowId"]
    assert w1 == i1
    sut.wait_status(w1, "waiting_input")
    assert sut.approve(w1, "po").status_code == 202
    view = sut.wait_status(w1, "succeeded")
    # Expected: status=succeeded; steps contain the four; read by runId and by workflowId both work.
    assert view["status"] == "succeeded"
    assert step_ids(view) == STEPS
    assert sut.view(r1)["workflowId"] == w1
    assert sut.view(w1)["runId"] == r1
    assert sut.view(r1) == sut.view(w1)


def test_seed004_d_fail_closed_api(live_system: LiveSystem) -> None:
    sut = live_system
    r = sut.post("/intents", raw="{bad")
    assert r.status_code == 400 and _error(r) == {"error": "invalid json"}
    r = sut.post("/intents", {"inputs": {}, "constraints": {}})
    assert r.status_code == 400 and "Intent" in _error(r)["error"]
    i_bad_schema = sut.new_intent({"goal": "schema", "inputs": {}, "constraints": {}})
    r = sut.new_run(i_bad_schema, {"unknownField": "x"})
    assert r.status_code == 400 and "RunRequest" in _error(r)["error"]
    i_cap = sut.new_intent({"goal": "caps bad", "inputs": {}, "constraints": {}})
    r = sut.new_run(
        i_cap,
        {"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 1, "sandboxMinutes": 1}},
    )
    # Expected: all 400; queue case returns code=queue_policy_violation; final DB count is 0.
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "queue_policy_violation"
    assert sut.scalar("SELECT COUNT(*) FROM app.runs WHERE intent_id = %s", (i_cap,)) == 0
    assert sut.scalar("SELECT COUNT(*) FROM app.runs WHERE intent_id = %s", (i_bad_schema,)) == 0


def test_seed004_e_hitl_lane(live_system: LiveSystem) -> None:
    """waiting_input -> events -> (plan gate: approve) -> succeeded. The early-event FSM guard is
    test_runs_events_fsm.py, where no worker can win the race to the gate.
    """
    sut = live_system
    i3 = sut.new_intent({"goal": "ask user", "inputs": {}, "constraints": {}})
    r3 = sut.start_run(i3, {"queuePartitionKey": "tenant-004"})
    view = sut.wait_status(r3, "waiting_input")
    assert view["lastStep"] == "CompileST", view  # the ask gate follows CompileST (contract §7.3)
    r = sut.post(f"/runs/{r3}/events", {"type": "input", "payload": {"answer": "42"}})
    assert (r.status_code, r.json()) == (202, {"accepted": True})
    sut.wait_view(
        r3,
        lambda v: v["status"] == "waiting_input" and v.get("lastStep") == "ApplyPatchST",
        "the plan gate after the ask gate",
    )
    assert sut.approve(r3, "po").status_code == 202
    view = sut.wait_status(r3, "succeeded")
    assert step_ids(view) == STEPS


def test_seed004_f_terminal_failure_and_retry_envelope(live_system: LiveSystem) -> None:
    sut = live_system
    i4 = sut.new_intent({"goal": "fail me", "inputs": {}, "constraints": {}})
    r4 = sut.start_run(i4, {"queuePartitionKey": "tenant-004"})
    sut.wait_status(r4, "waiting_input")
    assert sut.approve(r4, "po").status_code == 202
    view = sut.wait_status(r4, "retries_exceeded")
    assert view["nextAction"] == "REPAIR" and view["retryCount"] == 0
    assert view["error"] == "SBX execution failed [CMD_NONZERO]"
    r = sut.post(f"/runs/{r4}/retry")
    # Expected envelope: {"accepted":true,"newRunId":"<same run>","fromStep":"ExecuteST"}
    assert (r.status_code, r.json()) == (202, {"accepted": True, "newRunId": r4, "fromStep": "ExecuteST"})


# ---- SQL oracle pack (seed 001 lab O, seed 000 L11/L17; corrected forms) -----------------------------


def test_sql_oracles_after_the_labs(live_system: LiveSystem) -> None:
    """Runs after the labs above: no duplicate step, artifact or receipt; artifacts well formed."""
    sut = live_system
    assert sut.scalar("SELECT COUNT(*) FROM app.runs WHERE status = 'succeeded'") >= 1, "the labs ran no run"
    assert sut.sql("SELECT run_id FROM app.mock_receipts WHERE seen_count > 1") == []
    assert (
        sut.sql(
            "SELECT run_id, step_id, attempt, count(*) c FROM app.run_steps "
            "GROUP BY run_id, step_id, attempt HAVING count(*) > 1"
        )
        == []
    )
    # Lab O groups artifacts by (run_id, step_id, attempt, idx); the true key includes task_key.
    assert (
        sut.sql(
            "SELECT run_id, step_id, task_key, idx, attempt, count(*) c FROM app.artifacts "
            "GROUP BY run_id, step_id, task_key, idx, attempt HAVING count(*) > 1"
        )
        == []
    )
    assert (
        sut.sql(
            "SELECT run_id, step_id, task_key, attempt, count(*) FROM app.sbx_runs "
            "GROUP BY run_id, step_id, task_key, attempt HAVING count(*) > 1"
        )
        == []
    )
    # L11: bad_sha=0; bad_uri=0 restricted to ExecuteST (the empty task segment elsewhere is by design);
    # idx=0 rows of ExecuteST are artifact_index.
    assert sut.scalar("SELECT COUNT(*) FROM app.artifacts WHERE sha256 !~ '^[0-9a-f]{64}$'") == 0
    assert (
        sut.scalar(
            "SELECT COUNT(*) FROM app.artifacts WHERE step_id = 'ExecuteST' AND kind != 'question_card' "
            "AND uri IS NOT NULL AND uri !~ '^artifact://run/.+/step/.+/task/.+/.+'"
        )
        == 0
    )
    assert sut.sql("SELECT DISTINCT kind FROM app.artifacts WHERE step_id = 'ExecuteST' AND idx = 0") == [
        {"kind": "artifact_index"}
    ]
