"""The original's e2e `ops-controls` (contract-api §15.1), over HTTP against the live system; seed 001
lab Q runs it as `mise run test:e2e:file test/e2e/ops-controls.test.ts`.

slowstep(5000) -> s1=1 -> cancel 202 -> CANCELLED -> resume 202 -> s2=1 -> SUCCESS. A fork of the
finished slowstep at stepN 1 -> 202, workflowID == the original, a new forkedWorkflowID, and the fork
reaches SUCCESS. Cancelling a crashdemo whose workflow has a run row writes exactly one OPS artifact
on that run (op=cancel, the reason, kind json_diagnostic).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from tests.e2e.live import LiveSystem


def _until(sut: LiveSystem, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s\n{sut.logs()}")
        time.sleep(0.1)


def _status(sut: LiveSystem, wid: str) -> str:
    r = sut.get(f"/api/ops/wf/{wid}")
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def _marks(sut: LiveSystem, wid: str) -> dict[str, int]:
    marks: dict[str, int] = sut.get(f"/slowmarks?wf={wid}").json()
    return marks


def test_ops_controls(live_system: LiveSystem) -> None:
    sut = live_system
    wid = f"slow-{uuid.uuid4().hex[:8]}"
    assert sut.post(f"/slowstep?wf={wid}&sleep=5000").status_code == 202
    _until(sut, lambda: _marks(sut, wid)["s1"] == 1, "s1=1")
    r = sut.post(f"/api/ops/wf/{wid}/cancel", {})
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowID": wid})
    assert _status(sut, wid) == "CANCELLED"
    assert _marks(sut, wid) == {"s1": 1, "s2": 0}

    r = sut.post(f"/api/ops/wf/{wid}/resume", {})
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowID": wid})
    _until(sut, lambda: _marks(sut, wid)["s2"] == 1, "s2=1")
    _until(sut, lambda: _status(sut, wid) == "SUCCESS", "SUCCESS")
    assert _marks(sut, wid) == {"s1": 1, "s2": 1}

    r = sut.post(f"/api/ops/wf/{wid}/fork", {"stepN": 1})
    assert r.status_code == 202, r.text
    forked = r.json()["forkedWorkflowID"]
    assert r.json()["workflowID"] == wid and forked != wid
    _until(sut, lambda: _status(sut, forked) == "SUCCESS", "the fork's SUCCESS")


def test_cancelling_a_crashdemo_with_a_run_row_writes_one_ops_artifact_on_that_run(
    live_system: LiveSystem,
) -> None:
    sut = live_system
    # WF_SLEEP_MS is 300 ms in the live system: a demo may finish before the cancel lands (a 409 that
    # writes nothing); then try with a new one.
    for _ in range(5):
        wid = f"crash-{uuid.uuid4().hex[:8]}"
        intent = f"it-ctl-{wid}"
        sut.sql("INSERT INTO app.intents (id, goal, payload) VALUES (%s, 'ops-controls', '{}')", (intent,))
        sut.sql(
            "INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES (%s, %s, %s, 'running')",
            (f"run-{wid}", intent, wid),
        )
        r = sut.post(f"/crashdemo?wf={wid}")
        assert r.status_code == 202, r.text
        r = sut.post(f"/api/ops/wf/{wid}/cancel", {"actor": "qa", "reason": "ops-controls"})
        if r.status_code != 409:
            break
        assert r.json() == {"error": "cannot cancel workflow in status SUCCESS"}
    assert r.status_code == 202, r.text
    rows = sut.sql(
        "SELECT run_id, kind, inline FROM app.artifacts WHERE step_id = 'OPS' AND inline->>'targetWorkflowID' = %s",
        (wid,),
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["run_id"], row["kind"], row["inline"]["op"], row["inline"]["reason"]) == (
        f"run-{wid}",
        "json_diagnostic",
        "cancel",
        "ops-controls",
    )
    assert _status(sut, wid) == "CANCELLED"
