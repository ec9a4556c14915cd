"""contract-api §15.1 intents-validation: intent ingress, a run to success, 404 for a missing run."""

from __future__ import annotations

import re

from tests.e2e.live import LiveSystem


def test_intents_validation(live_system: LiveSystem) -> None:
    sut = live_system
    r = sut.post("/intents", {"goal": "validation goal", "inputs": {}, "constraints": {}})
    assert r.status_code == 201, r.text
    intent_id = r.json()["intentId"]
    assert re.fullmatch(r"it_[0-9a-f]{16}", intent_id), intent_id

    r = sut.post("/intents", {"inputs": {}, "constraints": {}})
    assert r.status_code == 400, r.text
    assert "Intent" in r.json()["error"]
    assert "details" in r.json()

    r = sut.new_run(intent_id, {"queuePartitionKey": "validation-tenant"})
    assert r.status_code == 202, r.text
    assert r.json()["workflowId"] == intent_id
    run_id = r.json()["runId"]
    sut.wait_status(run_id, "waiting_input")
    assert sut.approve(run_id).status_code == 202
    view = sut.wait_status(run_id, "succeeded")
    assert view["steps"][0]["phase"] == "compilation"

    r = sut.get("/runs/run_missing")
    assert (r.status_code, r.json()) == (404, {"error": "run not found"})


def test_start_for_a_missing_intent_is_404_before_the_body_is_read(live_system: LiveSystem) -> None:
    """contract-api §1.5: the intent check comes first, so a malformed body still gets 404."""
    r = live_system.post("/intents/it_0000000000000000/run", raw="{bad")
    assert (r.status_code, r.json()) == (404, {"error": "intent not found"})
