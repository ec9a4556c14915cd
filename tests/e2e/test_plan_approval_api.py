"""contract-api §15.1 plan-approval-api: approve-plan validation and its 202 envelope."""

from __future__ import annotations

from datetime import datetime

from tests.e2e.live import LiveSystem


def test_plan_approval_api(live_system: LiveSystem) -> None:
    sut = live_system
    intent_id = sut.new_intent({"goal": "approval goal", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "approval-tenant"})
    sut.wait_status(run_id, "waiting_input")

    r = sut.post(f"/runs/{run_id}/approve-plan", {"notes": "no approver"})
    assert r.status_code == 400, r.text
    assert "PlanApprovalRequest" in r.json()["error"]
    assert sut.scalar("SELECT count(*) FROM app.plan_approvals WHERE run_id = %s", (run_id,)) == 0

    r = sut.post(f"/runs/{run_id}/approve-plan", {"approvedBy": "reviewer", "notes": "looks good"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"accepted", "runId", "approvedAt"}
    assert body["accepted"] is True
    assert body["runId"] == run_id
    approved_at = datetime.fromisoformat(body["approvedAt"].replace("Z", "+00:00"))
    assert approved_at.tzinfo is not None

    sut.wait_status(run_id, "succeeded")
    row = sut.sql("SELECT approved_by, notes FROM app.plan_approvals WHERE run_id = %s", (run_id,))
    assert row == [{"approved_by": "reviewer", "notes": "looks good"}]


def test_approve_by_workflow_id_and_unknown_run(live_system: LiveSystem) -> None:
    """Dual lookup (contract-api §6.3) and 404 first (§4.6)."""
    sut = live_system
    intent_id = sut.new_intent({"goal": "approval by wid", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "approval-tenant"})
    r = sut.post(f"/runs/{intent_id}/approve-plan", {"approvedBy": "by-wid"})
    assert r.status_code == 202, r.text
    assert r.json()["runId"] == run_id
    sut.wait_status(run_id, "succeeded")
    r = sut.post("/runs/run_missing/approve-plan", {"approvedBy": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "run not found"})
