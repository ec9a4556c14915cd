"""Seed 001's ops-plane labs against the live system: E (the exact six), F (cancel/resume at the step
boundary), G (fork and its guard), H (the op-intent artifact oracle) and N (the ops kit).

Each test is one lab with the runbook's requests and pass criteria, in the runbook's order, sharing
its shell variables ($WID, $WF, $FORK) through `shell`. Lab G's conflict probe is posted as written
(`{"stepN":99999}`, no actor or reason) and gets the runbook's 409: actor and reason are optional
(spec/README decisions). The ops kit's `mise run ops:*` tasks run `python -m ops ops ...`; the test
runs those commands (and checks the tasks still name them).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
from typing import Any

import pytest

from kodo.config import Settings
from kodo.runtime import Runtime
from ops.processes import REPO, child_env
from tests.e2e.live import Json, LiveSystem
from tests.support import workflows as t

SIX = {
    ("get", "/api/ops/wf"),
    ("get", "/api/ops/wf/{workflow_id}"),
    ("get", "/api/ops/wf/{workflow_id}/steps"),
    ("post", "/api/ops/wf/{workflow_id}/cancel"),
    ("post", "/api/ops/wf/{workflow_id}/resume"),
    ("post", "/api/ops/wf/{workflow_id}/fork"),
}
SUMMARY_KEYS = {"workflowID", "status", "workflowName", "workflowClassName", "createdAt"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def shell() -> dict[str, Any]:
    return {}


def until(cond: Any, timeout: float, what: str, sut: LiveSystem) -> None:
    """The runbooks' `until ...; do sleep 0.2; done`, bounded."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s\n{sut.logs()}")
        time.sleep(0.2)


def wf_status(sut: LiveSystem, wid: str) -> Json:
    r = sut.get(f"/api/ops/wf/{wid}")
    assert r.status_code == 200, r.text
    return {k: r.json()[k] for k in ("workflowID", "status")}


def slowmarks(sut: LiveSystem, wf: str) -> Json:
    r = sut.get(f"/slowmarks?wf={wf}")
    assert r.status_code == 200, r.text
    body: Json = r.json()
    return body


def kodo_cli(sut: LiveSystem, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """What `mise run ops:<task>` runs, with the live system's environment."""
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=child_env(sut.env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---- lab E: ops plane contract (exact six) ----------------------------------------------------------


def test_lab_e_ops_plane_contract(live_system: LiveSystem, shell: dict[str, Any]) -> None:
    sut = live_system
    intent = sut.new_intent({"goal": "lab e", "inputs": {}, "constraints": {}})
    r = sut.post("/api/runs", {"intentId": intent, "queuePartitionKey": "tenant-ops"})
    assert r.status_code == 202, r.text
    wid = shell["WID"] = r.json()["workflowID"]
    sut.wait_header(wid, lambda h: h.get("nextAction") == "APPROVE_PLAN", "the plan gate")

    r = sut.get("/api/ops/wf?limit=5")
    assert r.status_code == 200, r.text
    first = r.json()[0]
    assert SUMMARY_KEYS <= set(first) <= SUMMARY_KEYS | {"queueName", "applicationVersion", "updatedAt"}
    assert isinstance(first["createdAt"], int) and len(r.json()) <= 5
    assert wid in [w["workflowID"] for w in sut.get("/api/ops/wf?limit=20").json()]

    r = sut.get(f"/api/ops/wf/{wid}")
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["workflowID"], got["workflowName"], got["workflowClassName"], got["queueName"]) == (
        wid,
        "run",
        "IntentWorkflow",
        "intentQ",
    )
    assert got["status"] == "PENDING" and got["audit"] == []
    r = sut.get(f"/api/ops/wf/{wid}/steps")
    assert r.status_code == 200, r.text
    assert r.json()[0]["functionId"] == 0 and isinstance(r.json()[0]["stepId"], str)

    # Fail-closed probe: ?unknown=1 -> 400.
    r = sut.get("/api/ops/wf?unknown=1")
    assert r.status_code == 400, r.text
    assert "ListWorkflowsQuery" in r.json()["error"] and r.json()["details"]
    # Exact six (scripts/policy-ops-surface.sh): the served document lists no seventh /api/ops/wf route.
    paths = sut.get("/openapi.json").json()["paths"]
    served = {(m, p) for p, ops in paths.items() if p.startswith("/api/ops/wf") for m in ops}
    assert served == SIX
    r = sut.post(f"/api/runs/{wid}/approve-plan", {"approvedBy": "lab-e"})  # leave the run finished
    assert r.status_code == 202, r.text


# ---- lab F: cancel/resume semantics (real boundary behaviour) ----------------------------------------


def test_lab_f_cancel_resume_at_the_step_boundary(live_system: LiveSystem, shell: dict[str, Any]) -> None:
    sut = live_system
    wf = shell["WF"] = f"slow_{int(time.time())}"
    r = sut.post(f"/slowstep?wf={wf}&sleep=5000")
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowId": wf})
    until(lambda: slowmarks(sut, wf)["s1"] == 1, 30, "s1=1", sut)
    started = time.monotonic()

    r = sut.post(f"/api/ops/wf/{wf}/cancel", {"actor": "qa", "reason": "boundary-proof"})
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowID": wf})
    assert wf_status(sut, wf) == {"workflowID": wf, "status": "CANCELLED"}
    assert slowmarks(sut, wf) == {"s1": 1, "s2": 0}
    # Expect s1=1, s2=0, CANCELLED: still so once the 5 s sleep would have ended (no kill, no step2).
    time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))
    assert slowmarks(sut, wf) == {"s1": 1, "s2": 0}
    assert wf_status(sut, wf)["status"] == "CANCELLED"

    r = sut.post(f"/api/ops/wf/{wf}/resume", {"actor": "qa", "reason": "continue"})
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowID": wf})
    until(lambda: slowmarks(sut, wf)["s2"] == 1, 30, "s2=1", sut)
    until(lambda: wf_status(sut, wf)["status"] == "SUCCESS", 15, "SUCCESS", sut)
    # Expect: same workflowID, terminal SUCCESS; each step ran once.
    assert wf_status(sut, wf) == {"workflowID": wf, "status": "SUCCESS"}
    assert slowmarks(sut, wf) == {"s1": 1, "s2": 1}
    assert int(sut.scalar("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,))) == 1


# ---- lab G: fork semantics + guard ------------------------------------------------------------------


def test_lab_g_fork_and_its_guard(live_system: LiveSystem, shell: dict[str, Any]) -> None:
    sut = live_system
    wf = shell["WF"]
    steps = sut.get(f"/api/ops/wf/{wf}/steps").json()
    maximum = max(s["functionId"] for s in steps)  # MAX=$(... | jq '[.[].functionId]|max')
    assert (maximum, [s["stepId"] for s in steps]) == (2, ["step1", "kodo.sleep", "step2"])
    r = sut.post(f"/api/ops/wf/{wf}/fork", {"stepN": maximum, "actor": "qa", "reason": "fork-proof"})
    assert r.status_code == 202, r.text
    fork = shell["FORK"] = r.json()["forkedWorkflowID"]
    assert r.json() == {"accepted": True, "workflowID": wf, "forkedWorkflowID": fork}
    assert UUID.match(fork)
    assert wf_status(sut, fork)["workflowID"] == fork
    until(lambda: wf_status(sut, fork)["status"] == "SUCCESS", 30, "the fork's SUCCESS", sut)
    fork_steps = sut.get(f"/api/ops/wf/{fork}/steps").json()
    assert [s["stepId"] for s in fork_steps] == ["step1", "kodo.sleep", "step2"]
    # Cached: the fork's step1 and sleep are the original's records (same start times).
    assert [s["startedAt"] for s in fork_steps[:2]] == [s["startedAt"] for s in steps[:2]]
    assert fork_steps[2]["startedAt"] > steps[2]["startedAt"]

    # Conflict guard, the probe as written (no actor, no reason): 409.
    r = sut.post(f"/api/ops/wf/{wf}/fork", raw='{"stepN":99999}')
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "fork stepN 99999 exceeds max step 2"}


# ---- lab H: op-intent artifact oracle ---------------------------------------------------------------


def test_lab_h_op_intent_artifacts(live_system: LiveSystem, shell: dict[str, Any]) -> None:
    sut = live_system
    out = sut.sql_app(
        "SELECT run_id,step_id,idx,kind,inline->>'op' op,inline->>'actor' actor,inline->>'reason' reason,"
        "inline->>'forkedWorkflowID' forked FROM app.artifacts WHERE step_id='OPS' "
        "ORDER BY created_at DESC LIMIT 20;"
    )
    rows = [line.split("|") for line in out.splitlines()]
    wf, fork = shell["WF"], shell["FORK"]
    mine = [r for r in rows if r[0] == wf]
    # Expect accepted cancel/resume/fork persisted as kind=json_diagnostic, step_id=OPS (newest first).
    assert mine == [
        [wf, "OPS", "0", "json_diagnostic", "fork", "qa", "fork-proof", fork],
        [wf, "OPS", "0", "json_diagnostic", "resume", "qa", "continue", ""],
        [wf, "OPS", "0", "json_diagnostic", "cancel", "qa", "boundary-proof", ""],
    ]
    # The rejected probe of lab G wrote nothing; the exactly-once oracle (full key) holds.
    assert (
        sut.sql_app(
            "SELECT count(*) FROM (SELECT 1 FROM app.artifacts GROUP BY run_id,step_id,task_key,idx,attempt "
            "HAVING count(*)>1) d"
        )
        == "0"
    )
    audit = sut.get(f"/api/ops/wf/{wf}").json()["audit"]
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [
        ("fork", "qa", "fork-proof"),
        ("resume", "qa", "continue"),
        ("cancel", "qa", "boundary-proof"),
    ]


# ---- lab N: ops kit (batch + views) ------------------------------------------------------------------


def test_lab_n_ops_kit(live_system: LiveSystem, shell: dict[str, Any]) -> None:
    sut = live_system
    tasks = tomllib.loads((REPO / "mise.toml").read_text())["tasks"]
    for task, command in (
        ("ops:list-failed", "-m ops ops list-failed"),
        ("ops:cancel-batch", "-m ops ops cancel-batch"),
        ("ops:resume-batch", "-m ops ops resume-batch"),
        ("ops:fork-batch", "-m ops ops fork-batch"),
    ):
        assert tasks[task]["run"].endswith(command), (task, tasks[task]["run"])

    runtime = Runtime.build(Settings.from_env(sut.env))
    failed = f"labn-failed-{int(time.time())}"
    runtime.client.start(t.fails, "lab N", workflow_id=failed)
    until(lambda: runtime.client.get(failed)["status"] == "ERROR", 30, "an ERROR workflow", sut)
    out = kodo_cli(sut, "ops", "list-failed")
    assert out.returncode == 0, out.stderr
    assert failed in out.stdout.split()

    # The lab as written, on $WF (SUCCESS by now): cancel and resume are refused, fork works.
    wf = shell["WF"]
    out = kodo_cli(sut, "ops", "cancel-batch", stdin=f"{wf}\n")
    assert (out.returncode, out.stdout.strip()) == (
        1,
        f"Cancelling workflow {wf}: failed: cannot cancel workflow in status SUCCESS",
    )
    out = kodo_cli(sut, "ops", "resume-batch", stdin=f"{wf}\n")
    assert (out.returncode, out.stdout.strip()) == (
        1,
        f"Resuming workflow {wf}: failed: cannot resume workflow in status SUCCESS",
    )
    out = kodo_cli(sut, "ops", "fork-batch", "1", "v1", stdin=f"{wf}\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Forking workflow {wf}: forked at step 1 as ")

    # On a running workflow: cancel-batch -> CANCELLED, resume-batch -> running again, then SUCCESS.
    live = f"slow_n_{int(time.time())}"
    assert sut.post(f"/slowstep?wf={live}&sleep=3000").status_code == 202
    until(lambda: slowmarks(sut, live)["s1"] == 1, 30, "s1=1", sut)
    out = kodo_cli(sut, "ops", "cancel-batch", "--actor", "oncall", "--reason", "lab-n", stdin=f"{live}\n")
    assert (out.returncode, out.stdout.strip()) == (0, f"Cancelling workflow {live}: cancelled")
    assert wf_status(sut, live)["status"] == "CANCELLED"
    out = kodo_cli(sut, "ops", "resume-batch", "--actor", "oncall", stdin=f"{live}\n")
    assert (out.returncode, out.stdout.strip()) == (0, f"Resuming workflow {live}: resumed")
    assert wf_status(sut, live)["status"] in ("PENDING", "ENQUEUED", "SUCCESS")
    until(lambda: wf_status(sut, live)["status"] == "SUCCESS", 30, "SUCCESS", sut)
    audit = sut.get(f"/api/ops/wf/{live}").json()["audit"]
    assert [(a["op"], a["actor"], a["reason"]) for a in audit] == [
        ("resume", "oncall", "-"),
        ("cancel", "oncall", "lab-n"),
    ]

    # The views the ops:sql:* tasks read.
    assert (
        sut.sql_app("SELECT count(*) FROM app.v_ops_failures_24h WHERE workflow_uuid = '" + failed + "'")
        == "1"
    )
