"""Seed 004 walkthrough C and contract-api §6.2: ten parallel starts of one intent give one run,
which executes once (intent-workflow-idempotency, step-counter-no-dup).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.e2e.live import STEPS, LiveSystem

PARALLEL = 10


def _post_together(sut: LiveSystem, intent_id: str, body: dict[str, str]) -> list[requests.Response]:
    barrier = threading.Barrier(PARALLEL)

    def one(_: int) -> requests.Response:
        with requests.Session() as s:  # one connection each, so the requests really overlap
            barrier.wait()
            return s.post(
                f"{sut.base}/intents/{intent_id}/run",
                json=body,
                headers={"content-type": "application/json"},
                timeout=30,
            )

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(PARALLEL)))


def test_ten_parallel_starts_give_one_run_that_succeeds_once(live_system: LiveSystem) -> None:
    sut = live_system
    i2 = sut.new_intent({"goal": "idempotency demo", "inputs": {}, "constraints": {}})
    responses = _post_together(sut, i2, {"traceId": "idem", "queuePartitionKey": "tenant-idem"})
    assert [r.status_code for r in responses] == [202] * PARALLEL, [r.text for r in responses]
    run_ids = {r.json()["runId"] for r in responses}
    assert len(run_ids) == 1, run_ids
    assert {r.json()["workflowId"] for r in responses} == {i2}
    (run_id,) = run_ids
    # Expected row count is 1.
    rows = sut.sql(
        "SELECT workflow_id, COUNT(*) AS n FROM app.runs WHERE workflow_id = %s GROUP BY workflow_id", (i2,)
    )
    assert rows == [{"workflow_id": i2, "n": 1}]
    assert sut.scalar("SELECT COUNT(*) FROM dbos.workflow_status WHERE workflow_uuid = %s", (i2,)) == 1

    sut.wait_status(run_id, "waiting_input")
    assert sut.approve(run_id).status_code == 202
    sut.wait_status(run_id, "succeeded")
    _assert_executed_once(sut, i2, run_id)

    # A later start of the same intent returns the same run and re-executes nothing.
    r = sut.new_run(i2, {"traceId": "idem", "queuePartitionKey": "tenant-idem"})
    assert (r.status_code, r.json()) == (202, {"runId": run_id, "workflowId": i2})
    assert sut.view(run_id)["status"] == "succeeded"
    _assert_executed_once(sut, i2, run_id)


def _assert_executed_once(sut: LiveSystem, intent_id: str, run_id: str) -> None:
    assert (
        sut.scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,))
        == "SUCCESS"
    )
    steps = sut.sql(
        "SELECT step_id, attempt, (output->>'attempt')::int AS output_attempt FROM app.run_steps "
        "WHERE run_id = %s ORDER BY started_at",
        (run_id,),
    )
    assert steps == [{"step_id": s, "attempt": 1, "output_attempt": 1} for s in STEPS]
    receipts = sut.sql("SELECT step_id, seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,))
    assert receipts == [{"step_id": "ExecuteST", "seen_count": 1}]
    assert sut.scalar("SELECT COUNT(*) FROM app.sbx_runs WHERE run_id = %s", (run_id,)) == 1


def test_seed004_c_as_written_is_ten_400s_and_no_row(live_system: LiveSystem) -> None:
    """The walkthrough's body has no queuePartitionKey: under the partition law every start is a
    400 queue_policy_violation and nothing is written (contract-api §14.1).
    """
    sut = live_system
    i2 = sut.new_intent({"goal": "idempotency demo", "inputs": {}, "constraints": {}})
    responses = _post_together(sut, i2, {"traceId": "idem"})
    assert [r.status_code for r in responses] == [400] * PARALLEL
    assert {r.json()["code"] for r in responses} == {"queue_policy_violation"}
    assert sut.scalar("SELECT COUNT(*) FROM app.runs WHERE workflow_id = %s", (i2,)) == 0
