"""The run stream (`GET /api/runs/:wid/stream`, Server-Sent Events): status changes, step
completions and sandbox output of a run on a real worker, resumable with `Last-Event-ID` with nothing
missed or repeated, closed when the run is terminal; and the commit-order guarantee behind it."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.db import pool
from kodo.intent.stream import Cursor, RunStream
from kodo.runtime import Runtime
from tests.support import procs
from tests.support.api import body
from tests.support.intent import Sql, approve, run_row, start_run, wait_run

Worker = Callable[..., procs.WorkerProc]
BAD_ID = 'invalid StreamQuery: data/lastEventId must match pattern "^(\\d{1,20})-(\\d{1,19})$"'
Event = dict[str, Any]


def _http(rt: Runtime, **changes: Any) -> FlaskClient:
    settings = dataclasses.replace(rt.settings, **changes)
    return create_app(runtime=Runtime.build(settings) if changes else rt).test_client()


def _events(text: str) -> list[Event]:
    """The events of an SSE body (comments and the `retry:` line skipped)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith((":", "retry:"))
        )
        if fields:
            out.append({"id": fields["id"], "event": fields["event"], "data": json.loads(fields["data"])})
    return out


def _read(http: FlaskClient, wid: str, last: str | None = None) -> list[Event]:
    headers = {"Last-Event-ID": last} if last else {}
    r = http.get(f"/api/runs/{wid}/stream", headers=headers)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    return _events(r.get_data(as_text=True))


def _position(event_id: str) -> tuple[int, int]:
    tx, seq = event_id.split("-")
    return int(tx), int(seq)


def test_a_finished_run_streams_its_status_steps_and_output_then_ends(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "stream me", approved=True)
    wait_run(sql, run_id, "succeeded")
    events = _read(_http(rt), wid)

    kinds = [
        (e["event"], e["data"].get("status") or e["data"].get("stepId") or e["data"].get("kind"))
        for e in events
    ]
    assert kinds[0] == ("status", "running")
    steps = [k for k in kinds if k[0] == "step"]
    assert steps == [("step", s) for s in ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")]
    assert ("output", "stdout") in kinds and ("output", "stream_closed") in kinds
    assert kinds.index(("output", "stream_closed")) < kinds.index(("step", "ExecuteST"))
    assert kinds[-2:] == [("status", "succeeded"), ("end", "succeeded")]
    assert events[-1]["data"] == {"status": "succeeded"}
    step = next(e["data"] for e in events if e["event"] == "step")
    assert set(step) == {"stepId", "attempt", "phase", "startedAt", "finishedAt"} and step["attempt"] == 1
    ids = [_position(e["id"]) for e in events[:-1]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # strictly increasing positions
    # The same rows the runbooks read: one notification per streamed event of the run's workflow.
    status_rows = sql(
        "SELECT count(*) AS n FROM dbos.notifications WHERE destination_uuid = %s AND topic = 'status'",
        (wid,),
    )[0]["n"]
    assert status_rows == sum(1 for e in events if e["event"] == "status")


def test_resuming_after_any_event_misses_and_repeats_nothing(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    start_worker()
    wid, run_id = start_run(rt, sql, "resume me", approved=True)
    wait_run(sql, run_id, "succeeded")
    http = _http(rt)
    full = _read(http, wid)
    for cut in (0, 1, len(full) // 2, len(full) - 2):
        assert _read(http, wid, full[cut]["id"]) == full[cut + 1 :]
    # After the last event: the stream ends at once, with the run's status.
    assert _read(http, wid, full[-1]["id"]) == [full[-1]]
    # ?lastEventId= does the same as the header.
    r = http.get(f"/api/runs/{wid}/stream?lastEventId={full[2]['id']}")
    assert _events(r.get_data(as_text=True)) == full[3:]


def test_a_live_run_followed_across_disconnects_gives_the_whole_stream_once(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    # Each connection lasts at most a second (KODO_STREAM_MAX_S=1): the client reconnects from the
    # last id it saw while the run waits at the plan gate, is approved and runs to its end.
    start_worker()
    wid, run_id = start_run(rt, sql, "follow me")
    http = _http(rt, stream_max_s=1)
    seen: list[Event] = []
    approved = False
    for _ in range(60):
        seen += _read(http, wid, seen[-1]["id"] if seen else None)
        if seen and seen[-1]["event"] == "end":
            break
        if not approved and run_row(sql, run_id)["next_action"] == "APPROVE_PLAN":
            approve(sql, run_id)
            rt.client.send(wid, {"type": "approve"}, "human-event")
            approved = True
    assert approved and seen[-1]["event"] == "end"
    assert seen == _read(_http(rt), wid)  # the same events as one uninterrupted read, in order
    statuses = [e["data"]["status"] for e in seen if e["event"] == "status"]
    assert statuses[:2] == ["running", "waiting_input"] and statuses[-1] == "succeeded"


def test_an_event_committed_late_is_never_skipped(rt: Runtime, sql: Sql) -> None:
    # Transaction A writes first (the lower position) but commits after B: the stream serves
    # neither while A is open, then both in position order; a reader past B never misses A.
    wid, run_id = start_run(rt, sql, "commit order")
    run = run_row(sql, run_id) | {"workflow_id": wid, "id": run_id, "retry_count": 0}
    stream = RunStream(run, Cursor())
    with pool.connect(rt.settings.database_url) as c:
        stream.poll(c)  # whatever the start wrote

    def note(conn: psycopg.Connection[Any], text: str) -> None:
        conn.execute(
            "INSERT INTO dbos.notifications (message_uuid, destination_uuid, topic, message) "
            "VALUES (%s, %s, 'status', %s)",
            (str(uuid.uuid4()), wid, json.dumps({"status": text})),
        )

    a = psycopg.connect(rt.settings.database_url)
    b = psycopg.connect(rt.settings.database_url, autocommit=True)
    try:
        note(a, "A")  # open, uncommitted
        note(b, "B")  # committed
        with pool.connect(rt.settings.database_url) as c:
            assert stream.poll(c) == []  # B waits behind A
        a.commit()
        with pool.connect(rt.settings.database_url) as c:
            got = [e.data["status"] for e in stream.poll(c)]
        assert got == ["A", "B"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("url", "headers", "status", "error"),
    [
        ("/api/runs/it_missing/stream", {}, 404, "run not found"),
        (
            "/api/runs/{wid}/stream",
            {"Last-Event-ID": "bad"},
            400,
            BAD_ID,
        ),
        ("/api/runs/{wid}/stream?lastEventId=1-x", {}, 400, BAD_ID),
        (
            "/api/runs/{wid}/stream?since=1",
            {},
            400,
            "invalid StreamQuery: data must NOT have additional properties",
        ),
    ],
)
def test_refusals_are_json_errors(
    rt: Runtime, sql: Sql, url: str, headers: dict[str, str], status: int, error: str
) -> None:
    wid, _ = start_run(rt, sql, "refusals")
    r = _http(rt).get(url.format(wid=wid), headers=headers)
    assert (r.status_code, body(r)["error"]) == (status, error)
