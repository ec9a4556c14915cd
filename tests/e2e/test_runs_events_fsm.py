"""contract-api §15.2 runs-events-fsm (and seed 004 E's FSM guard): /events only in waiting_input.

"Right after the start" is made exact: the run is started through a shim with no worker yet, so it is
still `queued` when the event arrives, whatever the machine's speed.
"""

from __future__ import annotations

from tests.e2e.live import LiveSystem, SystemFactory


def test_runs_events_fsm(make_system: SystemFactory) -> None:
    sut: LiveSystem = make_system("fsm").start("api")
    i3b = sut.new_intent({"goal": "ask fast", "inputs": {}, "constraints": {}})
    r3b = sut.start_run(i3b, {"queuePartitionKey": "tenant-fsm"})
    r = sut.post(f"/runs/{r3b}/events", {"type": "too_soon", "payload": {}})
    assert r.status_code == 409, r.text
    assert "cannot send event to run in status" in r.json()["error"]
    assert r.json() == {"error": "cannot send event to run in status queued", "status": "queued"}
    # The status guard comes before parsing (contract-api §4.7): a malformed early event is 409 too.
    assert sut.post(f"/runs/{r3b}/events", raw="{bad").status_code == 409
    delivered = (
        "SELECT count(*) FROM dbos.notifications WHERE destination_uuid = %s AND topic = 'human-event'"
    )
    assert sut.scalar(delivered, (i3b,)) == 0

    sut.start_workers()
    sut.wait_status(r3b, "waiting_input")
    r = sut.post(f"/runs/{r3b}/events", {"type": "input"})
    assert r.status_code == 400, r.text
    assert "RunEvent" in r.json()["error"]
    r = sut.post(f"/runs/{r3b}/events", {"type": "input", "payload": {"answer": "42"}})
    assert (r.status_code, r.json()) == (202, {"accepted": True})
    sut.wait_view(
        r3b, lambda v: v.get("lastStep") == "ApplyPatchST" and v["status"] == "waiting_input", "plan gate"
    )
    assert sut.approve(r3b).status_code == 202
    sut.wait_status(r3b, "succeeded")
    r = sut.post(f"/runs/{r3b}/events", {"type": "input", "payload": {}})
    assert r.json() == {"error": "cannot send event to run in status succeeded", "status": "succeeded"}
    assert r.status_code == 409
    r = sut.post("/runs/run_missing/events", {"type": "input", "payload": {}})
    assert (r.status_code, r.json()) == (404, {"error": "run not found"})
