"""contract-api §15.1 runs-retry: a "fail me" run ends retries_exceeded; /retry repairs it.

kodo's repair really re-executes from `fromStep` (spec/README decisions), so every /retry of a run
that still fails adds one to retryCount and one ExecuteST attempt, and a second /retry works too.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.live import Json, LiveSystem


def _repaired(times: int) -> Callable[[Json], bool]:
    return lambda v: v["retryCount"] >= times and v["status"] == "retries_exceeded"


def test_runs_retry(live_system: LiveSystem) -> None:
    sut = live_system
    intent_id = sut.new_intent({"goal": "fail me", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "retry-tenant"})
    sut.wait_status(run_id, "waiting_input")
    assert sut.approve(run_id).status_code == 202
    view = sut.wait_status(run_id, "retries_exceeded")
    assert (view["retryCount"], view["nextAction"]) == (0, "REPAIR")

    r = sut.post(f"/runs/{run_id}/retry")
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": True, "newRunId": run_id, "fromStep": "ExecuteST"}

    # The repair runs (repairing, retryCount 1), then ends retries_exceeded again.
    view = sut.wait_view(run_id, _repaired(1), "the repair to end")
    assert (view["status"], view["retryCount"], view["nextAction"]) == ("retries_exceeded", 1, "REPAIR")
    assert view["error"] == "SBX execution failed [CMD_NONZERO]"


def test_a_second_retry_re_executes_again(live_system: LiveSystem) -> None:
    sut = live_system
    intent_id = sut.new_intent({"goal": "fail me twice", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "retry-tenant"})
    assert sut.approve(run_id).status_code == 202  # approved before the gate: it never waits
    sut.wait_status(run_id, "retries_exceeded")
    for n in (1, 2):
        r = sut.post(f"/runs/{run_id}/retry")
        assert (r.status_code, r.json()) == (
            202,
            {"accepted": True, "newRunId": run_id, "fromStep": "ExecuteST"},
        )
        view = sut.wait_view(run_id, _repaired(n), f"repair {n} to end")
        assert (view["retryCount"], view["nextAction"]) == (n, "REPAIR")
    attempts = sut.sql(
        "SELECT attempt FROM app.run_steps WHERE run_id = %s AND step_id = 'ExecuteST' ORDER BY attempt",
        (run_id,),
    )
    assert len(attempts) == 3, f"ExecuteST must run once per execution (1 + 2 repairs): {attempts}"
    assert (
        sut.sql("SELECT run_id FROM app.mock_receipts WHERE run_id = %s AND seen_count > 1", (run_id,)) == []
    )


def test_retry_is_refused_unless_failed(live_system: LiveSystem) -> None:
    sut = live_system
    intent_id = sut.new_intent({"goal": "not failed", "inputs": {}, "constraints": {}})
    run_id = sut.start_run(intent_id, {"queuePartitionKey": "retry-tenant"})
    sut.wait_status(run_id, "waiting_input")
    r = sut.post(f"/runs/{run_id}/retry")
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "cannot retry run in status waiting_input", "status": "waiting_input"}
    r = sut.post("/runs/run_missing/retry")
    assert (r.status_code, r.json()) == (404, {"error": "run not found"})
