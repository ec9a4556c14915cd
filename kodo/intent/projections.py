"""Read models of a run (contract-api §8): RunView (legacy), RunHeader and StepRow[] (under /api).

Projections are built from database rows in the contract's key order; a key the contract omits when
empty is left out, never written as null. Each projection is checked against its type on the way
out, and a failed check is a 500 (`EgressError`), never a 400. Must not import flask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NotRequired, TypeVar, cast

from pydantic import ConfigDict, TypeAdapter, with_config
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12

from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.errors import KodoError

Row = Mapping[str, Any]
T = TypeVar("T")

RunStatus = Literal[
    "queued", "running", "waiting_input", "succeeded", "failed", "canceled", "retries_exceeded", "repairing"
]
HeaderStatus = Literal["ENQUEUED", "PENDING", "WAITING_INPUT", "SUCCESS", "ERROR", "CANCELLED"]

# ---- the shapes (also the OpenAPI response schemas) ------------------------------------------------
# Field names are the contract's JSON keys; every shape is closed (no extra keys).
CLOSED = ConfigDict(extra="forbid")


@with_config(CLOSED)
class RunViewStep(TypedDict):
    stepId: str
    phase: str
    output: NotRequired[dict[str, Any]]
    startedAt: str | None
    finishedAt: str | None
    traceId: str | None
    spanId: str | None


@with_config(CLOSED)
class RunViewArtifact(TypedDict):
    kind: str
    uri: str | None
    inline: Any
    sha256: str


@with_config(CLOSED)
class RunView(TypedDict):
    """`RunView.v0` (§8.1), `GET /runs/:id`."""

    runId: str
    workflowId: str
    status: RunStatus
    steps: list[RunViewStep]
    artifacts: list[RunViewArtifact]
    traceId: str | None
    lastStep: str | None
    error: NotRequired[str]
    retryCount: int
    nextAction: NotRequired[str]


@with_config(CLOSED)
class ErrorMessage(TypedDict):
    message: str


@with_config(CLOSED)
class RunHeader(TypedDict):
    """`RunHeader.v1` (§8.2), `GET /api/runs/:wid` and `POST /api/runs`."""

    workflowID: str
    status: HeaderStatus
    workflowName: Literal["RunIntent"]
    createdAt: int
    updatedAt: int
    error: NotRequired[ErrorMessage]
    traceId: str | None
    spanId: None
    nextAction: str | None
    lastStep: str | None
    traceBaseUrl: NotRequired[str]


@with_config(CLOSED)
class ArtifactRef(TypedDict):
    """`ArtifactRef.v1`: an artifact of a StepRow."""

    id: str
    workflowID: str
    stepID: str
    kind: str
    mime: str
    size: int
    storageKey: str | None


@with_config(CLOSED)
class StepRow(TypedDict):
    """`StepRow.v1` (§8.3), `GET /api/runs/:wid/steps`."""

    stepID: str
    name: str
    attempt: int
    startedAt: int
    endedAt: NotRequired[int]
    error: NotRequired[dict[str, Any]]
    artifactRefs: list[ArtifactRef]
    traceId: str | None
    spanId: str | None


RUN_VIEW: TypeAdapter[RunView] = TypeAdapter(RunView)
RUN_HEADER: TypeAdapter[RunHeader] = TypeAdapter(RunHeader)
STEP_ROWS: TypeAdapter[list[StepRow]] = TypeAdapter(list[StepRow])


class EgressError(KodoError):
    """A projection failed its own response check (an internal error, reported as 500)."""

    code = "egress_validation_failed"


def checked(adapter: TypeAdapter[T], body: object) -> T:
    """`body` as it is, once it passed its response model (`EgressError` otherwise): every read
    model of the intent product is checked by this before it leaves."""
    try:
        adapter.validate_python(body, strict=True)
    except PydanticValidationError as exc:
        raise EgressError(f"response check failed: {exc}") from exc
    return cast(T, body)


# ---- time --------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ts: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and `Z` (JavaScript's `toISOString`)."""
    ts = ts.astimezone(UTC)
    return f"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z"


def epoch_ms(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def _iso_or_none(ts: datetime | str | None) -> str | None:
    """A time as the API writes it (a string is one already: api_run_view formats its times)."""
    return ts if ts is None or isinstance(ts, str) else iso(ts)


# ---- RunView (§8.1) ----------------------------------------------------------------------------


def project_run_view(run: Row, steps: Sequence[Row], artifacts: Sequence[Row]) -> RunView:
    """`GET /runs/:id`: steps are the latest attempts by start time, artifacts all attempts."""
    view: dict[str, Any] = {
        "runId": run["id"],
        "workflowId": run["workflow_id"],
        "status": run["status"],
        "steps": [_run_view_step(s) for s in steps],
        "artifacts": [
            {"kind": a["kind"], "uri": a["uri"], "inline": a["inline"], "sha256": a["sha256"]}
            for a in artifacts
        ],
        "traceId": run["trace_id"],
        "lastStep": run["last_step"],
    }
    if run["error"] is not None:
        view["error"] = run["error"]
    view["retryCount"] = run["retry_count"]
    if run["next_action"] is not None:
        view["nextAction"] = run["next_action"]
    return checked(RUN_VIEW, view)


def _run_view_step(step: Row) -> dict[str, Any]:
    out: dict[str, Any] = {"stepId": step["step_id"], "phase": step["phase"]}
    if isinstance(step["output"], dict):
        out["output"] = step["output"]
    out["startedAt"] = _iso_or_none(step["started_at"])
    out["finishedAt"] = _iso_or_none(step["finished_at"])
    out["traceId"] = step["trace_id"]
    out["spanId"] = step["span_id"]
    return out


# ---- RunHeader (§8.2) --------------------------------------------------------------------------

_HEADER_OF_RUN: dict[str, HeaderStatus] = {
    "queued": "ENQUEUED",
    "running": "PENDING",
    "waiting_input": "WAITING_INPUT",
    "succeeded": "SUCCESS",
    "failed": "ERROR",
    "canceled": "CANCELLED",
    "retries_exceeded": "ERROR",
    "repairing": "PENDING",
}
# The engine statuses the overlay knows; ERROR and MAX_RECOVERY_ATTEMPTS_EXCEEDED never override.
_HEADER_OF_ENGINE: dict[str, HeaderStatus] = {
    "PENDING": "ENQUEUED",
    "ENQUEUED": "ENQUEUED",
    "SUCCESS": "SUCCESS",
    "CANCELLED": "CANCELLED",
}
_RANK: dict[HeaderStatus, int] = {
    "ENQUEUED": 1,
    "PENDING": 2,
    "WAITING_INPUT": 3,
    "SUCCESS": 4,
    "ERROR": 4,
    "CANCELLED": 4,
}


def header_status(run_status: str, engine_status: str | None = None) -> HeaderStatus:
    """The run row's status mapped, then merged monotonically with the engine's (HEAD rule).

    The engine value replaces the row's only when its rank is strictly higher, so a run parked at
    a gate stays WAITING_INPUT while its workflow is PENDING, and a run cancelled while still
    ENQUEUED (no code ran to update the row) shows CANCELLED.
    """
    status = _HEADER_OF_RUN.get(run_status, "ERROR")
    overlay = _HEADER_OF_ENGINE.get(engine_status) if engine_status is not None else None
    if overlay is not None and _RANK[overlay] > _RANK[status]:
        return overlay
    return status


def project_run_header(
    run: Row, *, engine_status: str | None = None, trace_base_url: str | None = None
) -> RunHeader:
    """`GET /api/runs/:wid` (with the engine's status) and `POST /api/runs` (the row only)."""
    header: dict[str, Any] = {
        "workflowID": run["workflow_id"],
        "status": header_status(run["status"], engine_status),
        "workflowName": "RunIntent",
        "createdAt": epoch_ms(run["created_at"]),
        "updatedAt": epoch_ms(run["updated_at"]),
    }
    if run["error"]:
        header["error"] = {"message": run["error"]}
    header["traceId"] = run["trace_id"]
    header["spanId"] = None
    header["nextAction"] = run["next_action"]
    header["lastStep"] = run["last_step"]
    if trace_base_url:
        header["traceBaseUrl"] = trace_base_url
    return checked(RUN_HEADER, header)


# ---- StepRow[] (§8.3) --------------------------------------------------------------------------

_JSON_MIME_KINDS = frozenset({"json", "plan_card", "question_card", "json_diagnostic"})


def project_step_rows(workflow_id: str, steps: Sequence[Row], artifacts: Sequence[Row]) -> list[StepRow]:
    """One row per product step (latest attempt) with the artifacts of that attempt.

    Ordered by startedAt, then stepID. Only `app.run_steps` rows: no synthetic engine rows.
    """
    by_attempt: dict[tuple[str, int], list[Row]] = {}
    for art in artifacts:
        by_attempt.setdefault((art["step_id"], art["attempt"]), []).append(art)
    rows: list[dict[str, Any]] = []
    for step in steps:
        row: dict[str, Any] = {
            "stepID": step["step_id"],
            "name": step["phase"],
            "attempt": step["attempt"],
            "startedAt": 0 if step["started_at"] is None else epoch_ms(step["started_at"]),
        }
        if step["finished_at"] is not None:
            row["endedAt"] = epoch_ms(step["finished_at"])
        output = step["output"]
        if isinstance(output, dict) and isinstance(output.get("error"), dict):
            row["error"] = output["error"]
        row["artifactRefs"] = [
            _artifact_ref(art, workflow_id, step["step_id"])
            for art in by_attempt.get((step["step_id"], step["attempt"]), [])
        ]
        row["traceId"] = step["trace_id"]
        row["spanId"] = step["span_id"]
        rows.append(row)
    rows.sort(key=lambda r: (r["startedAt"], r["stepID"]))
    return checked(STEP_ROWS, rows)


def _artifact_ref(art: Row, workflow_id: str, step_id: str) -> dict[str, Any]:
    kind = art["kind"]
    if kind in _JSON_MIME_KINDS:
        mime = "application/json"
    elif kind == "svg":
        mime = "image/svg+xml"
    else:
        mime = "text/plain"
    return {
        "id": art["uri"] or f"artifact://{workflow_id}/{step_id}/{art['idx']}",
        "workflowID": workflow_id,
        "stepID": art["step_id"],
        "kind": kind,
        "mime": mime,
        "size": _js_json_length(art["inline"]),
        "storageKey": art["uri"],
    }


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value: null, false, 0 and "" are falsy; {} and [] are not."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float | str):
        return bool(value)
    return True


def _js_json_length(value: Any) -> int:
    """`JSON.stringify(v).length` for a truthy v, else 0: compact JSON, counted in UTF-16 units."""
    if not js_truthy(value):
        return 0
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-16-le")) // 2


# ---- loading -----------------------------------------------------------------------------------


def load_steps(c: Conn, run_id: str) -> list[dict[str, Any]]:
    return c.execute(Q["api_run_steps"], {"run_id": run_id}).fetchall()


def load_artifacts(c: Conn, run_id: str) -> list[dict[str, Any]]:
    return c.execute(Q["api_run_artifacts"], {"run_id": run_id}).fetchall()


def load_engine_status(c: Conn, workflow_id: str) -> str | None:
    row = c.execute(Q["api_engine_status"], {"workflow_id": workflow_id}).fetchone()
    return None if row is None else str(row["status"])


def run_view(c: Conn, id_or_workflow_id: str) -> RunView | None:
    """`GET /runs/:id` in one statement (the run, its steps and artifacts); None if no such run."""
    row = c.execute(Q["api_run_view"], {"id": id_or_workflow_id}).fetchone()
    return None if row is None else project_run_view(row, row["steps"], row["artifacts"])


def run_header(c: Conn, run: Row, *, trace_base_url: str | None = None) -> RunHeader:
    """The header with the engine overlay (`GET /api/runs/:wid`)."""
    status = load_engine_status(c, run["workflow_id"])
    return project_run_header(run, engine_status=status, trace_base_url=trace_base_url)


def step_rows(c: Conn, run: Row) -> list[StepRow]:
    return project_step_rows(run["workflow_id"], load_steps(c, run["id"]), load_artifacts(c, run["id"]))
