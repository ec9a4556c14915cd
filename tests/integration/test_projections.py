"""Projections (contract-api §8) from rows written with SQL: exact JSON text, key order, omissions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.intent.projections import epoch_ms, header_status, iso, js_truthy
from kodo.runtime import Runtime
from tests.support.api import Sql, body

T0 = datetime(2026, 2, 20, 10, 0, 0, 123456, tzinfo=UTC)
T0_MS = 1771581600123
T0_ISO = "2026-02-20T10:00:00.123Z"


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


def _compact(value: Any) -> str:
    """The exact response text: compact, UTF-8, in key order (Flask ends a JSON body with a newline)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n"


def _run(sql: Sql, **columns: Any) -> tuple[str, str]:
    """An intent and its run, inserted directly; returns (run_id, workflow_id)."""
    suffix = uuid.uuid4().hex[:16]
    wid, run_id = f"it_{suffix}", f"run_{suffix}"
    sql("INSERT INTO app.intents (id, goal, payload) VALUES (%s, 'g', '{}'::jsonb)", (wid,))
    values = {"status": "running", "created_at": T0, "updated_at": T0, **columns}
    names = ", ".join(values)
    sql(
        f"INSERT INTO app.runs (id, intent_id, workflow_id, {names}) "
        f"VALUES (%(id)s, %(wid)s, %(wid)s, {', '.join(f'%({n})s' for n in values)})",
        {"id": run_id, "wid": wid, **values},
    )
    return run_id, wid


def _step(sql: Sql, run_id: str, step_id: str, phase: str, **columns: Any) -> None:
    values = {"attempt": 1, "output": None, "started_at": None, "finished_at": None, **columns}
    if values["output"] is not None:
        values["output"] = json.dumps(values["output"])
    sql(
        "INSERT INTO app.run_steps (run_id, step_id, phase, output, attempt, started_at, finished_at, trace_id, "
        "span_id) VALUES (%(run_id)s, %(step_id)s, %(phase)s, %(output)s::jsonb, %(attempt)s, %(started_at)s, "
        "%(finished_at)s, %(trace_id)s, %(span_id)s)",
        {"trace_id": None, "span_id": None, **values, "run_id": run_id, "step_id": step_id, "phase": phase},
    )


def _artifact(sql: Sql, run_id: str, step_id: str, idx: int, kind: str, **columns: Any) -> None:
    values = {
        "task_key": "",
        "attempt": 1,
        "uri": f"artifact://run/{run_id}/step/{step_id}/task//{idx}",
        "inline": None,
    }
    values.update(columns)
    if values["inline"] is not None:
        values["inline"] = json.dumps(values["inline"])
    sql(
        "INSERT INTO app.artifacts (run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256) "
        "VALUES (%(run_id)s, %(step_id)s, %(task_key)s, %(idx)s, %(attempt)s, %(kind)s, %(uri)s, %(inline)s::jsonb, "
        "%(sha)s)",
        {
            **values,
            "run_id": run_id,
            "step_id": step_id,
            "idx": idx,
            "kind": kind,
            "sha": f"sha-{step_id}-{idx}",
        },
    )


def _engine(sql: Sql, wid: str, status: str) -> None:
    sql(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name, application_version, inputs) "
        "VALUES (%s, %s, 'IntentWorkflow.run', 'intentQ', 'v-proj', '{}')",
        (wid, status),
    )


def _at(second: int) -> datetime:
    return T0.replace(second=second)


# ---- time -------------------------------------------------------------------------------------------


def test_time_formats() -> None:
    assert (iso(T0), epoch_ms(T0)) == (T0_ISO, T0_MS)
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
    assert epoch_ms(before_epoch) == -1  # floor, as a JS Date would hold it


def test_js_truthiness() -> None:
    assert [js_truthy(v) for v in (None, False, 0, 0.0, "")] == [False] * 5
    truthy: list[Any] = [{}, [], "0", 1, True, {"a": 1}]
    assert [js_truthy(v) for v in truthy] == [True] * 6


# ---- RunView (§8.1) ---------------------------------------------------------------------------------


def test_run_view_exact_text(http: FlaskClient, sql: Sql) -> None:
    run_id, wid = _run(
        sql,
        status="succeeded",
        trace_id="test-trace",
        last_step="ExecuteST",
        next_action="NONE",
        retry_count=0,
    )
    _step(
        sql,
        run_id,
        "CompileST",
        "compilation",
        output={"zeta": 1, "a": 2, "attempt": 1},
        started_at=_at(1),
        finished_at=_at(2),
    )
    _step(sql, run_id, "ApplyPatchST", "patching", output={"attempt": 1, "old": True}, started_at=_at(3))
    _step(
        sql, run_id, "ApplyPatchST", "patching", attempt=2, output=None, started_at=_at(4), finished_at=_at(5)
    )
    _step(
        sql,
        run_id,
        "ExecuteST",
        "execution",
        output=["not", "an", "object"],
        started_at=_at(6),
        trace_id="tr",
        span_id="sp",
    )
    _step(sql, run_id, "DecideST", "planning", output={"attempt": 1})  # never started: null sorts first
    _artifact(sql, run_id, "ExecuteST", 1, "stdout", task_key="k1", inline={"text": "OK"})
    _artifact(sql, run_id, "ExecuteST", 0, "artifact_index", task_key="k1", inline={"json": []})
    _artifact(sql, run_id, "ApplyPatchST", 999, "none", inline={"status": "no_artifacts"})
    _artifact(sql, run_id, "CompileST", 0, "plan_card", inline={"goal": "g"}, attempt=2)
    _artifact(sql, run_id, "CompileST", 0, "plan_card", inline={"goal": "g"}, attempt=1, uri=None)

    r = http.get(f"/runs/{run_id}")
    assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")
    expected = {
        "runId": run_id,
        "workflowId": wid,
        "status": "succeeded",
        "steps": [
            {"stepId": "DecideST", "phase": "planning", "output": {"attempt": 1}, "startedAt": None,
             "finishedAt": None, "traceId": None, "spanId": None},
            {"stepId": "CompileST", "phase": "compilation", "output": {"a": 2, "zeta": 1, "attempt": 1},
             "startedAt": "2026-02-20T10:00:01.123Z", "finishedAt": "2026-02-20T10:00:02.123Z",
             "traceId": None, "spanId": None},
            {"stepId": "ApplyPatchST", "phase": "patching", "startedAt": "2026-02-20T10:00:04.123Z",
             "finishedAt": "2026-02-20T10:00:05.123Z", "traceId": None, "spanId": None},
            {"stepId": "ExecuteST", "phase": "execution", "startedAt": "2026-02-20T10:00:06.123Z",
             "finishedAt": None, "traceId": "tr", "spanId": "sp"},
        ],
        "artifacts": [
            {"kind": "none", "uri": f"artifact://run/{run_id}/step/ApplyPatchST/task//999",
             "inline": {"status": "no_artifacts"}, "sha256": "sha-ApplyPatchST-999"},
            {"kind": "plan_card", "uri": None, "inline": {"goal": "g"}, "sha256": "sha-CompileST-0"},
            {"kind": "plan_card", "uri": f"artifact://run/{run_id}/step/CompileST/task//0",
             "inline": {"goal": "g"}, "sha256": "sha-CompileST-0"},
            {"kind": "artifact_index", "uri": f"artifact://run/{run_id}/step/ExecuteST/task//0",
             "inline": {"json": []}, "sha256": "sha-ExecuteST-0"},
            {"kind": "stdout", "uri": f"artifact://run/{run_id}/step/ExecuteST/task//1",
             "inline": {"text": "OK"}, "sha256": "sha-ExecuteST-1"},
        ],
        "traceId": "test-trace",
        "lastStep": "ExecuteST",
        "retryCount": 0,
        "nextAction": "NONE",
    }  # fmt: skip
    # The JSONB key order of step outputs (shorter keys first) is kept, as the golden file needs.
    assert r.get_data(as_text=True) == _compact(expected)


def test_run_view_error_and_next_action(http: FlaskClient, sql: Sql) -> None:
    run_id, wid = _run(sql, status="waiting_input", error="plan_not_approved", next_action="APPROVE_PLAN")
    view = body(http.get(f"/runs/{wid}"))
    assert list(view)[-4:] == ["lastStep", "error", "retryCount", "nextAction"]
    assert (view["error"], view["nextAction"], view["traceId"], view["lastStep"]) == (
        "plan_not_approved",
        "APPROVE_PLAN",
        None,
        None,
    )
    run_id, _ = _run(sql, status="failed", error="")
    view = body(http.get(f"/runs/{run_id}"))
    assert view["error"] == "" and "nextAction" not in view  # `??` keeps "", drops null


def test_run_view_of_an_invalid_status_is_500_not_400(http: FlaskClient, sql: Sql) -> None:
    run_id, _ = _run(sql, status="PENDING")  # the original's sleep smoke wrote this; no CHECK stops it
    r = http.get(f"/runs/{run_id}")
    assert (r.status_code, r.json) == (500, {"error": "internal error"})


# ---- RunHeader (§8.2) -------------------------------------------------------------------------------


def test_run_header_exact_text_for_a_manual_running_row(http: FlaskClient, sql: Sql) -> None:
    run_id, wid = _run(sql, status="running", trace_id="t", last_step="CompileST", updated_at=_at(9))
    r = http.get(f"/api/runs/{run_id}")
    assert r.get_data(as_text=True) == _compact(
        {
            "workflowID": wid,
            "status": "PENDING",
            "workflowName": "RunIntent",
            "createdAt": T0_MS,
            "updatedAt": T0_MS + 9000,
            "traceId": "t",
            "spanId": None,
            "nextAction": None,
            "lastStep": "CompileST",
        }
    )


def test_run_header_error_object(http: FlaskClient, sql: Sql) -> None:
    _, wid = _run(
        sql, status="retries_exceeded", error="SBX execution failed [CMD_NONZERO]", next_action="REPAIR"
    )
    header = body(http.get(f"/api/runs/{wid}"))
    assert list(header)[4:7] == ["updatedAt", "error", "traceId"]
    assert header["error"] == {"message": "SBX execution failed [CMD_NONZERO]"}
    assert (header["status"], header["nextAction"]) == ("ERROR", "REPAIR")
    _, wid = _run(sql, status="failed", error="")
    assert "error" not in body(http.get(f"/api/runs/{wid}"))  # an empty error is omitted


@pytest.mark.parametrize(
    ("db_status", "engine_status", "header"),
    [
        ("queued", None, "ENQUEUED"),
        ("running", None, "PENDING"),
        ("waiting_input", None, "WAITING_INPUT"),
        ("succeeded", None, "SUCCESS"),
        ("failed", None, "ERROR"),
        ("canceled", None, "CANCELLED"),
        ("retries_exceeded", None, "ERROR"),
        ("repairing", None, "PENDING"),
        ("bogus", None, "ERROR"),
        # The engine only wins with a strictly higher rank (ENQUEUED < PENDING < WAITING_INPUT < terminal).
        ("queued", "PENDING", "ENQUEUED"),
        ("running", "PENDING", "PENDING"),
        ("waiting_input", "PENDING", "WAITING_INPUT"),
        ("queued", "CANCELLED", "CANCELLED"),
        ("running", "SUCCESS", "SUCCESS"),
        ("waiting_input", "CANCELLED", "CANCELLED"),
        ("retries_exceeded", "SUCCESS", "ERROR"),
        ("repairing", "ERROR", "PENDING"),
        ("running", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "PENDING"),
        ("succeeded", "ENQUEUED", "SUCCESS"),
    ],
)
def test_header_status_merge(
    http: FlaskClient, sql: Sql, db_status: str, engine_status: str | None, header: str
) -> None:
    assert header_status(db_status, engine_status) == header
    _, wid = _run(sql, status=db_status)
    if engine_status is not None:
        _engine(sql, wid, engine_status)
    assert body(http.get(f"/api/runs/{wid}"))["status"] == header


# ---- StepRow[] (§8.3) -------------------------------------------------------------------------------


def test_step_rows_exact_text(http: FlaskClient, sql: Sql) -> None:
    run_id, wid = _run(sql)
    # Same start for two steps: ties go to the stepID order. A null start is 0 and sorts first.
    _step(
        sql,
        run_id,
        "DecideST",
        "planning",
        output={"error": {"code": "X"}},
        started_at=_at(5),
        finished_at=_at(6),
    )
    _step(sql, run_id, "CompileST", "compilation", output={"error": "not an object"}, started_at=_at(5))
    _step(sql, run_id, "ApplyPatchST", "patching", attempt=1, started_at=_at(1))
    _step(sql, run_id, "ApplyPatchST", "patching", attempt=2, started_at=_at(7), trace_id="t", span_id="s")
    _step(sql, run_id, "ExecuteST", "execution")
    _artifact(sql, run_id, "ApplyPatchST", 0, "patch", attempt=1, inline={"text": "old attempt"})
    _artifact(sql, run_id, "ApplyPatchST", 999, "none", attempt=2, inline={"status": "no_artifacts"})
    _artifact(sql, run_id, "CompileST", 0, "plan_card", inline={"goal": "ü"})
    _artifact(sql, run_id, "CompileST", 1, "svg", inline=None, uri=None)
    _artifact(sql, run_id, "DecideST", 0, "json_diagnostic", inline={"a": 1})

    r = http.get(f"/api/runs/{wid}/steps")
    assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")

    def ref(step: str, idx: int, kind: str, mime: str, size: int, uri: str | None = "") -> dict[str, Any]:
        stored = f"artifact://run/{run_id}/step/{step}/task//{idx}" if uri == "" else uri
        return {
            "id": stored or f"artifact://{wid}/{step}/{idx}",
            "workflowID": wid,
            "stepID": step,
            "kind": kind,
            "mime": mime,
            "size": size,
            "storageKey": stored,
        }

    expected = [
        {"stepID": "ExecuteST", "name": "execution", "attempt": 1, "startedAt": 0, "artifactRefs": [],
         "traceId": None, "spanId": None},
        {"stepID": "CompileST", "name": "compilation", "attempt": 1, "startedAt": T0_MS + 5000,
         "artifactRefs": [ref("CompileST", 0, "plan_card", "application/json", len('{"goal":"ü"}')),
                          ref("CompileST", 1, "svg", "image/svg+xml", 0, uri=None)],
         "traceId": None, "spanId": None},
        {"stepID": "DecideST", "name": "planning", "attempt": 1, "startedAt": T0_MS + 5000,
         "endedAt": T0_MS + 6000, "error": {"code": "X"},
         "artifactRefs": [ref("DecideST", 0, "json_diagnostic", "application/json", 7)],
         "traceId": None, "spanId": None},
        {"stepID": "ApplyPatchST", "name": "patching", "attempt": 2, "startedAt": T0_MS + 7000,
         "artifactRefs": [ref("ApplyPatchST", 999, "none", "text/plain", len('{"status":"no_artifacts"}'))],
         "traceId": "t", "spanId": "s"},
    ]  # fmt: skip
    assert r.get_data(as_text=True) == _compact(expected)


def test_step_rows_of_a_run_without_steps_is_empty(http: FlaskClient, sql: Sql) -> None:
    run_id, wid = _run(sql, status="queued")
    assert body(http.get(f"/api/runs/{run_id}/steps")) == []
    assert body(http.get(f"/api/runs/{wid}/steps")) == []


@pytest.mark.parametrize(
    ("kind", "mime"),
    [
        ("json", "application/json"),
        ("question_card", "application/json"),
        ("text", "text/plain"),
        ("stdout", "text/plain"),
        ("artifact_index", "text/plain"),
        ("raw", "text/plain"),
        ("timings", "text/plain"),
        ("file", "text/plain"),
    ],
)
def test_artifact_ref_mime(http: FlaskClient, sql: Sql, kind: str, mime: str) -> None:
    run_id, wid = _run(sql)
    _step(sql, run_id, "ExecuteST", "execution", started_at=_at(1))
    _artifact(sql, run_id, "ExecuteST", 0, kind, inline={"x": "y"})
    [row] = body(http.get(f"/api/runs/{wid}/steps"))
    assert (row["artifactRefs"][0]["mime"], row["artifactRefs"][0]["size"]) == (mime, 9)
