"""The intent workflow on real workers: steps, gates, sandbox outcomes, retries and repair.

Runs are created with SQL and started through the engine client (the HTTP layer has its own tests);
every assertion reads the product tables the runbooks' SQL oracles read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from kodo.intent import HUMAN_EVENT_TOPIC, STEP_TOPIC, STEPS, TASK_WORKFLOW
from kodo.intent.artifacts import NONE_SHA256
from kodo.intent.workflow import DeterminismViolationError, _record_step
from kodo.runtime import Runtime
from tests.support import procs
from tests.support.helpers import poll
from tests.support.intent import Sql, approve, run_row, start_repair, start_run, wait_run

Worker = Callable[..., procs.WorkerProc]


def _steps(sql: Sql, run_id: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT step_id, attempt, phase, output FROM app.run_steps WHERE run_id = %s ORDER BY started_at",
        (run_id,),
    )


def _hooks(command: str) -> dict[str, Any]:
    return {"testHooks": {"testCommand": command}}


def test_approved_run_succeeds_with_four_steps_artifacts_receipt_and_events(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "demo", approved=True)
    row = wait_run(sql, run_id, "succeeded")
    assert (row["last_step"], row["retry_count"], row["error"]) == ("ExecuteST", 0, None)
    steps = _steps(sql, run_id)
    assert [(s["step_id"], s["attempt"], s["phase"]) for s in steps] == [
        ("CompileST", 1, "compilation"),
        ("ApplyPatchST", 1, "patching"),
        ("DecideST", 1, "planning"),
        ("ExecuteST", 1, "execution"),
    ]
    plan = steps[0]["output"]
    assert plan == {
        "goal": "demo",
        "design": ["Design for: demo"],
        "files": [],
        "risks": [],
        "tests": [],
        "attempt": 1,
    }
    execute = steps[3]["output"]
    assert (execute["stdout"], execute["errCode"], execute["taskKey"]) == (
        "OK: pnpm test\n",
        "NONE",
        "aggregated",
    )
    arts = sql(
        "SELECT step_id, idx, kind, uri, sha256 FROM app.artifacts WHERE run_id = %s ORDER BY step_id, task_key, idx",
        (run_id,),
    )
    assert [(a["step_id"], a["kind"]) for a in arts] == [
        ("ApplyPatchST", "none"),
        ("CompileST", "plan_card"),
        ("DecideST", "none"),
        *[("ExecuteST", k) for k in ("artifact_index", "file", "timings", "raw", "stderr", "stdout")],
    ]
    assert arts[0]["uri"] == f"artifact://run/{run_id}/step/ApplyPatchST/task//none"
    assert arts[0]["sha256"] == NONE_SHA256
    assert arts[1]["uri"] == f"artifact://run/{run_id}/step/CompileST/task//plan.json"
    assert all(len(a["sha256"]) == 64 for a in arts)
    [receipt] = sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
    assert receipt["seen_count"] == 1
    events = [json.loads(r["message"])["status"] for r in sql(
        "SELECT message FROM dbos.notifications WHERE destination_uuid = %s AND topic = 'status' ORDER BY seq", (wid,)
    )]  # fmt: skip
    assert events == ["running", "succeeded"]
    [task] = sql("SELECT task_key FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    chunks = sql(
        "SELECT topic, message FROM dbos.notifications WHERE destination_uuid = %s ORDER BY seq",
        (task["task_key"],),
    )
    assert [c["topic"] for c in chunks] == ["stdout", "stream_closed"]
    assert json.loads(chunks[0]["message"]) == {"chunk": "OK: pnpm test\n", "kind": "stdout", "seq": 0}
    assert json.loads(chunks[1]["message"]) == {"seq": 1}
    [child] = sql(
        "SELECT queue_name, queue_partition_key, status FROM dbos.workflow_status WHERE workflow_uuid = %s",
        (task["task_key"],),
    )
    assert child == {"queue_name": "sbxQ", "queue_partition_key": "tenant-test", "status": "SUCCESS"}
    assert rt.client.get(wid)["status"] == "SUCCESS"


def test_plan_gate_waits_without_a_worker_slot_and_approval_releases_it(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker(concurrency=1)
    wid, run_id = start_run(rt, sql, "needs approval")
    row = wait_run(sql, run_id, "waiting_input")
    assert (row["last_step"], row["next_action"], row["error"]) == (
        "ApplyPatchST",
        "APPROVE_PLAN",
        "plan_not_approved",
    )
    # Parked: the one worker slot is free, so another (approved) run goes all the way through.
    _, other = start_run(rt, sql, "other", approved=True)
    wait_run(sql, other, "succeeded")
    approve(sql, run_id)
    rt.client.send(wid, {"type": "approve-plan", "payload": {"approvedBy": "qa"}}, topic=HUMAN_EVENT_TOPIC)
    row = wait_run(sql, run_id, "succeeded")
    assert (row["next_action"], row["error"], row["last_step"]) == ("NONE", None, "ExecuteST")


def test_a_non_approval_event_at_the_plan_gate_returns_it_to_waiting(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "flicker")
    wait_run(sql, run_id, "waiting_input")
    rt.client.send(wid, {"type": "input", "payload": {}}, topic=HUMAN_EVENT_TOPIC)
    # Consumed by the gate: it re-checks, finds no approval and waits again.
    consumed = (
        "SELECT 1 FROM dbos.notifications WHERE destination_uuid = %s AND topic = %s "
        "AND consumed_at_epoch_ms IS NOT NULL"
    )
    poll(lambda: bool(sql(consumed, (wid, HUMAN_EVENT_TOPIC))), 10, "the gate consumed the event")
    # Woken, the gate re-checked: still no approval, so it waits again (a new pass of the gate).
    poll(lambda: len(_status_events(sql, wid)) >= 4, 10, "running -> waiting -> running -> waiting")
    assert _status_events(sql, wid)[:4] == ["running", "waiting_input", "running", "waiting_input"]
    row = wait_run(sql, run_id, "waiting_input", next_action="APPROVE_PLAN")
    assert row["error"] == "plan_not_approved"


def test_ask_gate_writes_a_question_and_waits_for_any_event(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "ask user for approval")
    row = wait_run(sql, run_id, "waiting_input")
    assert (row["last_step"], row["next_action"]) == ("CompileST", None)
    [card] = sql(
        "SELECT step_id, idx, kind, uri, inline FROM app.artifacts WHERE run_id = %s AND kind = 'question_card'",
        (run_id,),
    )
    assert card["inline"] == {"question": "What is the answer?"}
    assert card["uri"] == f"artifact://run/{run_id}/step/HITL/task//question.json"
    rt.client.send(wid, {"type": "input", "payload": {"answer": "yes"}}, topic=HUMAN_EVENT_TOPIC)
    wait_run(sql, run_id, "waiting_input", last_step="ApplyPatchST", next_action="APPROVE_PLAN")
    approve(sql, run_id)
    rt.client.send(wid, {"type": "approve-plan", "payload": {}}, topic=HUMAN_EVENT_TOPIC)
    wait_run(sql, run_id, "succeeded")


def test_constraint_ask_user_opens_the_gate_but_the_word_task_does_not(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    _, asked = start_run(rt, sql, "plain goal", constraints={"askUser": True}, approved=True)
    _, task = start_run(rt, sql, "run the task", approved=True)
    wait_run(sql, asked, "waiting_input", last_step="CompileST")
    wait_run(sql, task, "succeeded")


def test_fail_me_ends_retries_exceeded_and_a_repair_reruns_execute(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    _, run_id = start_run(rt, sql, "please fail me", approved=True)
    row = wait_run(sql, run_id, "retries_exceeded")
    assert (row["error"], row["next_action"], row["retry_count"]) == (
        "SBX execution failed [CMD_NONZERO]",
        "REPAIR",
        0,
    )
    assert [s["step_id"] for s in _steps(sql, run_id)] == list(STEPS)  # ExecuteST row written on failure
    start_repair(rt, run_id, 1)
    row = wait_run(sql, run_id, "retries_exceeded", retry_count=1)
    assert (row["error"], row["next_action"]) == ("SBX execution failed [CMD_NONZERO]", "REPAIR")
    attempts = sql(
        "SELECT attempt FROM app.run_steps WHERE run_id = %s AND step_id = 'ExecuteST' ORDER BY attempt",
        (run_id,),
    )
    assert [a["attempt"] for a in attempts] == [1, 2]  # re-executed with a new attempt
    assert (
        sql("SELECT count(*) AS n FROM app.mock_receipts WHERE run_id = %s AND seen_count > 1", (run_id,))[0][
            "n"
        ]
        == 0
    )


def test_flaky_infra_succeeds_on_the_third_attempt(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    start_worker()
    _, run_id = start_run(rt, sql, "flaky", constraints=_hooks("FLAKY_INFRA_FAIL"), approved=True)
    wait_run(sql, run_id, "succeeded", timeout=40)
    [execute] = [s for s in _steps(sql, run_id) if s["step_id"] == "ExecuteST"]
    assert execute["attempt"] == 3 and execute["output"]["attempt"] == 3
    assert [r["err_code"] for r in sql("SELECT err_code FROM app.sbx_runs WHERE run_id = %s ORDER BY attempt", (run_id,))] == [
        "BOOT_FAIL", "BOOT_FAIL", "NONE",
    ]  # fmt: skip


def test_timeout_is_terminal_without_retry(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    start_worker()
    _, run_id = start_run(rt, sql, "slow", constraints=_hooks("TIMEOUT_ME"), approved=True)
    row = wait_run(sql, run_id, "retries_exceeded")
    assert row["error"] == "SBX execution failed [TIMEOUT]"
    assert len(sql("SELECT 1 FROM app.sbx_runs WHERE run_id = %s", (run_id,))) == 1


def test_repair_succeeds_once_the_transient_cause_is_gone(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    # The sandbox provider is misconfigured on the first sbx worker (microsandbox: BOOT_FAIL every time).
    start_worker(name="intent", queues="intentQ,controlQ")
    broken = start_worker(
        name="sbx-broken",
        queues="sbxQ",
        env={"SBX_MODE": "live", "SBX_PROVIDER": "microsandbox", "SBX_ALT_PROVIDER_ENABLED": "true"},
    )
    _, run_id = start_run(rt, sql, "repairable", approved=True)
    row = wait_run(sql, run_id, "retries_exceeded", timeout=40)
    assert "BOOT_FAIL" in row["error"]
    broken.kill9()
    start_worker(name="sbx-fixed", queues="sbxQ")  # the operator fixes the configuration
    start_repair(rt, run_id, 1)
    row = wait_run(sql, run_id, "succeeded", timeout=40)
    assert (row["retry_count"], row["last_step"], row["next_action"]) == (1, "ExecuteST", "NONE")
    attempts = sql("SELECT attempt, err_code FROM app.sbx_runs WHERE run_id = %s ORDER BY attempt", (run_id,))
    assert [(a["attempt"], a["err_code"]) for a in attempts] == [
        (1, "BOOT_FAIL"),
        (2, "BOOT_FAIL"),
        (3, "BOOT_FAIL"),
        (4, "NONE"),
    ]
    [execute] = [s for s in _steps(sql, run_id) if s["step_id"] == "ExecuteST"]
    assert execute["attempt"] == 4
    # Compile/ApplyPatch/Decide were reused, not re-run.
    assert [(s["step_id"], s["attempt"]) for s in _steps(sql, run_id)][:3] == [
        ("CompileST", 1), ("ApplyPatchST", 1), ("DecideST", 1),
    ]  # fmt: skip


def test_cancel_stops_a_run_waiting_on_its_sandbox_child(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    start_worker(env={"CHAOS_SLEEP_EXECUTE": "1500"})
    wid, run_id = start_run(rt, sql, "to cancel", approved=True)
    wait_run(sql, run_id, "running", last_step="DecideST")
    child = "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s"
    poll(lambda: bool(sql(child, (wid,))), 10, "the sandbox child is started")
    rt.client.cancel(wid)
    assert rt.client.wait(wid, timeout_s=10)["status"] == "CANCELLED"
    # The child finishes its sandbox task, but the cancelled parent never commits ExecuteST.
    [task] = sql(child, (wid,))
    assert rt.client.wait(task["workflow_uuid"], timeout_s=15)["status"] == "SUCCESS"
    time.sleep(1.0)
    row = run_row(sql, run_id)
    assert (row["status"], row["last_step"], row["next_action"]) == ("canceled", "DecideST", "NONE")
    assert row["error"] == f"Workflow {wid} has been cancelled"
    assert rt.client.get(wid)["status"] == "CANCELLED"
    assert _status_events(sql, wid) == ["running", "canceled"]


def _status_events(sql: Sql, wid: str) -> list[str]:
    rows = sql(
        "SELECT message FROM dbos.notifications WHERE destination_uuid = %s AND topic = 'status' ORDER BY seq",
        (wid,),
    )
    return [json.loads(r["message"])["status"] for r in rows]


def test_a_run_cancelled_before_any_worker_ran_it_is_canceled_not_queued(rt: Runtime, sql: Sql) -> None:
    wid, run_id = start_run(rt, sql, "never ran")  # no worker
    rt.client.cancel(wid)
    row = run_row(sql, run_id)
    assert (row["status"], row["next_action"], row["error"]) == (
        "canceled",
        "NONE",
        f"Workflow {wid} has been cancelled",
    )
    assert _status_events(sql, wid) == ["canceled"]


def test_a_timed_out_run_waiting_at_the_plan_gate_ends_canceled(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "slow approver", timeout_ms=1500)
    wait_run(sql, run_id, "waiting_input", next_action="APPROVE_PLAN")
    # Parked (no worker holds it): the reconciler's cancel writes the run row in the same transaction.
    row = wait_run(sql, run_id, "canceled", timeout=10)
    assert (row["next_action"], row["last_step"]) == ("NONE", "ApplyPatchST")
    assert rt.client.get(wid)["status"] == "CANCELLED"
    # An approval after the cancel changes nothing.
    approve(sql, run_id)
    rt.client.send(wid, {"type": "approve-plan", "payload": {}}, topic=HUMAN_EVENT_TOPIC)
    time.sleep(1.0)
    assert run_row(sql, run_id)["status"] == "canceled"


def test_one_sandbox_child_per_test_and_a_merged_execute_result(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    hooks = {"testHooks": {"tests": ["test1.ts", "test2.ts", "test3.ts"], "testCommand": "echo running"}}
    wid, run_id = start_run(rt, sql, "fan out", constraints=hooks, approved=True, partition_key="tenant-fan")
    wait_run(sql, run_id, "succeeded")
    tasks = sql("SELECT task_key, request->>'cmd' AS cmd FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    assert sorted(t["cmd"] for t in tasks) == [f"echo running test{i}.ts" for i in (1, 2, 3)]
    assert all(len(t["task_key"]) == 64 and int(t["task_key"], 16) >= 0 for t in tasks)
    children = sql(
        "SELECT workflow_uuid, queue_partition_key FROM dbos.workflow_status WHERE parent_workflow_id = %s",
        (wid,),
    )
    assert sorted(c["workflow_uuid"] for c in children) == sorted(t["task_key"] for t in tasks)
    assert {c["queue_partition_key"] for c in children} == {"tenant-fan"}
    [execute] = [s for s in _steps(sql, run_id) if s["step_id"] == "ExecuteST"]
    out = execute["output"]
    assert out["stdout"] == "\n---\n".join(f"OK: echo running test{i}.ts\n" for i in (1, 2, 3))
    assert out["metrics"] == {"wallMs": 1, "cpuMs": 3, "memPeakMB": 1}
    assert len(out["artifactIndexRef"].split(",")) == 3 and len(out["raw"]["tasks"]) == 3
    # One artifact_index (idx 0) per task.
    idx0 = sql(
        "SELECT kind FROM app.artifacts WHERE run_id = %s AND step_id = 'ExecuteST' AND idx = 0", (run_id,)
    )
    assert [r["kind"] for r in idx0] == ["artifact_index"] * 3


def test_a_fan_out_waits_once_for_all_its_tasks(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    # 40 sandbox tasks, started in one batch: the parent parks once for all of them and the last one
    # to end wakes it once, so it is claimed twice in all (before the fan-out, after the fan-in),
    # not once per task.
    start_worker()
    tests = [f"t{i}.ts" for i in range(40)]
    hooks = {"testHooks": {"tests": tests, "testCommand": "echo fan"}}
    wid, run_id = start_run(rt, sql, "wide fan out", constraints=hooks, approved=True)
    wait_run(sql, run_id, "succeeded", timeout=60)
    [parent] = sql("SELECT lease_epoch FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
    assert parent["lease_epoch"] <= 3, parent
    names = [r["function_name"] for r in rt.client.steps(wid)]
    assert names.count("kodo.start_children") == 1 and names.count("kodo.wait_children") == 1
    assert "kodo.get_result" not in names
    [execute] = [s for s in _steps(sql, run_id) if s["step_id"] == "ExecuteST"]
    assert len(execute["output"]["raw"]["tasks"]) == 40
    assert execute["output"]["stdout"] == "\n---\n".join(f"OK: echo fan {t}\n" for t in tests)


def test_a_run_cancelled_at_the_plan_gate_resumes_to_the_gate_and_then_succeeds(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    """Resume moves the run row back out of `canceled`, to where the workflow stands: at the plan gate
    it waits for the approval again (so approve-plan wakes it), and the approval finishes the run."""
    start_worker()
    wid, run_id = start_run(rt, sql, "resume me")
    wait_run(sql, run_id, "waiting_input", next_action="APPROVE_PLAN")
    rt.client.cancel(wid)
    assert run_row(sql, run_id)["status"] == "canceled"
    rt.client.resume(wid)
    row = run_row(sql, run_id)
    assert (row["status"], row["next_action"], row["error"]) == (
        "waiting_input",
        "APPROVE_PLAN",
        "plan_not_approved",
    )
    assert _status_events(sql, wid)[-2:] == ["canceled", "waiting_input"]
    approve(sql, run_id)
    rt.client.send(wid, {"type": "approve-plan", "payload": {"approvedBy": "qa"}}, topic=HUMAN_EVENT_TOPIC)
    row = wait_run(sql, run_id, "succeeded")
    assert (row["next_action"], row["error"], row["last_step"]) == ("NONE", None, "ExecuteST")
    assert rt.client.get(wid)["status"] == "SUCCESS"
    assert [s["step_id"] for s in _steps(sql, run_id)] == list(STEPS)  # each product step once


def test_a_run_cancelled_before_it_ran_resumes_queued(rt: Runtime, sql: Sql) -> None:
    wid, run_id = start_run(rt, sql, "never ran")  # no worker
    rt.client.cancel(wid)
    rt.client.resume(wid)
    row = run_row(sql, run_id)
    assert (row["status"], row["next_action"], row["error"]) == ("queued", "NONE", None)
    assert rt.client.get(wid)["status"] == "ENQUEUED"


def test_a_sandbox_attempt_recorded_before_a_crash_is_not_run_again(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    """A kill after an attempt's sbx_runs row committed but before the step's checkpoint: the re-run
    step returns the recorded attempt instead of running the sandbox a second time (a live sandbox
    is not deterministic: a second run would differ from the record, or do its effects twice)."""
    start_worker()
    _, run_id = start_run(rt, sql, "demo", approved=True)
    wait_run(sql, run_id, "succeeded")
    [done] = sql("SELECT request, response, metrics FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    # The record a crashed attempt left behind, for a task whose step has no checkpoint yet. Its
    # stdout differs from what the (deterministic) mock sandbox would print if it ran again.
    task = {**done["request"], "taskKey": "k-recorded"}
    recorded = {**done["response"], "taskKey": "k-recorded", "stdout": "RECORDED\n"}
    sql(
        "INSERT INTO app.sbx_runs (run_id, step_id, task_key, attempt, provider, request, response, err_code, "
        "metrics) VALUES (%s, 'ExecuteST', 'k-recorded', 1, 'mock', %s, %s, 'NONE', %s)",
        (run_id, json.dumps(task), json.dumps(recorded), json.dumps(done["metrics"])),
    )
    rt.client.start(TASK_WORKFLOW, task, run_id, 0, workflow_id="sbx-rerun", queue="sbxQ")
    row = rt.client.wait("sbx-rerun", 20)
    assert row["status"] == "SUCCESS", row["error"]
    assert json.loads(row["output"]) == {**recorded, "attempt": 1}
    assert sql("SELECT count(*) AS n FROM app.sbx_runs WHERE task_key = 'k-recorded'", ())[0]["n"] == 1
    chunks = "SELECT count(*) AS n FROM dbos.notifications WHERE destination_uuid = 'k-recorded'"
    assert sql(chunks, ())[0]["n"] == 0  # the sandbox did not run: nothing streamed


def test_a_step_record_writes_its_row_last_step_and_event_once_and_a_diverging_repeat_is_refused(
    rt: Runtime, sql: Sql
) -> None:
    # _record_step is one statement (row, lastStep, `step` event): a repeat of the same attempt
    # writes nothing more, and a repeat with other content is a determinism violation.
    intent_id, run_id = f"it_{uuid.uuid4().hex[:16]}", f"run_{uuid.uuid4().hex[:16]}"
    sql("INSERT INTO app.intents (id, goal, payload) VALUES (%s, 'g', '{}')", (intent_id,))
    sql(  # the run's workflow row (no worker serves this version: it only receives the events)
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name, application_version,"
        " inputs) VALUES (%s, 'PENDING', 'IntentWorkflow.run', 'intentQ', 'no-worker', '[]')",
        (intent_id,),
    )
    sql(
        "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES (%s, %s, %s, 'running')",
        (run_id, intent_id, intent_id),
    )
    ctx = {"runId": run_id, "workflowId": intent_id}
    started = datetime.now(UTC)
    with rt.db.tx() as c:
        assert _record_step(c, ctx, "CompileST", {"plan": 1}, 1, started) == {"plan": 1}
    with rt.db.tx() as c:
        _record_step(c, ctx, "CompileST", {"plan": 1}, 1, started)  # the same attempt again
    with pytest.raises(DeterminismViolationError), rt.db.tx() as c:
        _record_step(c, ctx, "CompileST", {"plan": 2}, 1, started)
    assert [(s["step_id"], s["attempt"], s["output"]) for s in _steps(sql, run_id)] == [
        ("CompileST", 1, {"plan": 1, "attempt": 1})
    ]
    assert run_row(sql, run_id)["last_step"] == "CompileST"
    events = sql(
        "SELECT message FROM dbos.notifications WHERE destination_uuid = %s AND topic = %s",
        (intent_id, STEP_TOPIC),
    )
    assert len(events) == 1, events
    event = json.loads(events[0]["message"])
    assert (event["stepId"], event["attempt"], event["phase"]) == ("CompileST", 1, "compilation")
