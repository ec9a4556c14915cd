"""contract-api §15.1 api-shim, seed 000 L07 / seed 004 A: the split topology.

The shim (`mise run start:api-shim`: the API alone) enqueues and reads; the worker side (`mise run
start:worker`: intentQ/controlQ and sbxQ workers plus the reconciler) executes. Queued work drains
only when a worker of the same application version is up.
"""

from __future__ import annotations

import time

from tests.e2e.live import STEPS, LiveSystem, SystemFactory, step_ids

L07_RUN = {
    "traceId": "split",
    "queueName": "intentQ",
    "recipeName": "sandbox-default",
    "queuePartitionKey": "tenant-split",
    "workload": {"concurrency": 1, "steps": 2, "sandboxMinutes": 1},
}


def _run_to_success(sut: LiveSystem, goal: str) -> tuple[str, str]:
    i2 = sut.new_intent({"goal": goal, "inputs": {}, "constraints": {}})
    r2 = sut.start_run(i2, L07_RUN)
    sut.wait_status(r2, "waiting_input")
    assert sut.post(f"/runs/{r2}/approve-plan", {"approvedBy": "po"}).status_code == 202
    view = sut.wait_status(r2, "succeeded")
    w2 = view["workflowId"]
    assert w2 == i2
    assert sut.view(w2)["runId"] == r2
    return i2, r2


def test_api_shim(make_system: SystemFactory) -> None:
    sut = make_system("shim").start("api")
    assert set(sut.procs) == {"api"}

    # The shim alone accepts and enqueues, and nothing executes.
    i1 = sut.new_intent({"goal": "split-topology", "inputs": {}, "constraints": {}})
    r1 = sut.start_run(i1, L07_RUN)
    time.sleep(1.5)
    assert sut.view(r1)["status"] == "queued"
    assert sut.scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (i1,)) == "ENQUEUED"

    # A worker comes up: the queued run drains.
    sut.start_workers()
    sut.wait_status(r1, "waiting_input")
    assert sut.post(f"/runs/{r1}/approve-plan", {"approvedBy": "po"}).status_code == 202
    view = sut.wait_status(r1, "succeeded")
    assert view["workflowId"] == i1
    assert sut.view(i1)["runId"] == r1

    # Across a worker restart (kill -9 of both pools), the next run succeeds too.
    sut.restart("intent", "sbx")
    _run_to_success(sut, "split-topology after restart")

    # An ask run: waiting_input -> /events 202 -> waiting_input -> approve -> succeeded.
    i3 = sut.new_intent({"goal": "ask the shim", "inputs": {}, "constraints": {}})
    r3 = sut.start_run(i3, {"queuePartitionKey": "tenant-split"})
    sut.wait_status(r3, "waiting_input")
    r = sut.post(f"/runs/{r3}/events", {"type": "input", "payload": {"answer": "yes"}})
    assert (r.status_code, r.json()) == (202, {"accepted": True})
    sut.wait_view(
        r3, lambda v: v["status"] == "waiting_input" and v.get("lastStep") == "ApplyPatchST", "the plan gate"
    )
    assert sut.approve(r3, "po").status_code == 202
    assert step_ids(sut.wait_status(r3, "succeeded")) == STEPS


def test_app_version_mismatch_leaves_the_run_queued(make_system: SystemFactory) -> None:
    """L07/L18: shim and worker must share DBOS__APPVERSION, else runs stick `queued`."""
    other = make_system("other-version").start_workers()
    shim = make_system("shim").start("api")
    assert other.version != shim.version
    i = shim.new_intent({"goal": "version parity", "inputs": {}, "constraints": {}})
    r = shim.start_run(i, L07_RUN)
    time.sleep(3.0)
    assert shim.view(r)["status"] == "queued"
    row = shim.sql(
        "SELECT status, application_version FROM dbos.workflow_status WHERE workflow_uuid = %s", (i,)
    )
    assert row == [{"status": "ENQUEUED", "application_version": shim.version}]
    # The shim's own version's worker drains it.
    shim.start_workers()
    shim.wait_status(r, "waiting_input")


def test_split_topology_via_dbos_appversion(make_system: SystemFactory) -> None:
    """Seed 004 A / 001 lab P: worker and shim started with DBOS__APPVERSION (no KODO_APP_VERSION)."""
    version = f"demo-{time.time_ns()}"
    sut = make_system("dbos-appversion", KODO_APP_VERSION="", DBOS__APPVERSION=version)
    sut.start("api")
    sut.start_workers()
    assert sut.get("/healthz").json() == {"ok": True}
    _, run_id = _run_to_success(sut, "split with DBOS__APPVERSION")
    wid = sut.view(run_id)["workflowId"]
    assert (
        sut.scalar("SELECT application_version FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
        == version
    )
