"""contract-api §15.1 plan-build-approval: the run waits at the plan gate after ApplyPatchST."""

from __future__ import annotations

from tests.e2e.live import LiveSystem


def test_plan_build_approval(live_system: LiveSystem) -> None:
    sut = live_system
    intent_id = sut.new_intent({"goal": "build approval", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "build-tenant"})
    view = sut.wait_status(run_id, "waiting_input")
    assert view["lastStep"] == "ApplyPatchST", view
    assert view["nextAction"] == "APPROVE_PLAN", view  # contract-api §7.2
    assert view["error"] == "plan_not_approved", view
    assert [s["stepId"] for s in view["steps"]] == ["CompileST", "ApplyPatchST"]

    assert sut.approve(run_id, "builder").status_code == 202
    view = sut.wait_status(run_id, "succeeded")
    assert view["lastStep"] == "ExecuteST"
    assert "error" not in view, view
