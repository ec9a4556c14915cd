"""Read models of the operator UI (kodo/api/ui.py): the run list, a run's timeline, queue depth.

Read-only: each is one or two queries of `kodo/db/queries/ui.sql`, projected in a closed shape
(also the OpenAPI response schema). Times are epoch milliseconds, as the /api projections give them.
The timeline carries what the run page draws: every attempt of every product step (start, end), and
every fan-out sandbox task of the run's executions with its queue wait (enqueued to first claimed)
and its run time (claimed to finished). Must not import flask.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from kodo import clock
from kodo.db.pool import Conn
from kodo.db.queries import Q
from kodo.intent.projections import CLOSED, RunStatus, checked, epoch_ms
from kodo.queues import SBX_QUEUE

Row = Mapping[str, Any]

DEFAULT_RUNS = 50
MAX_RUNS = 200


class RecentRunsQuery(BaseModel):
    """`RecentRunsQuery`: the query of `GET /api/ui/runs` (limit already read as a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="RecentRunsQuery")

    status: RunStatus | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_RUNS)] = DEFAULT_RUNS


@with_config(CLOSED)
class RunSummary(TypedDict):
    runId: str
    workflowID: str
    status: RunStatus
    goal: str | None
    partitionKey: str | None
    lastStep: str | None
    nextAction: str | None
    error: str | None
    retryCount: int
    createdAt: int
    updatedAt: int


@with_config(CLOSED)
class TimelineStep(TypedDict):
    stepId: str
    phase: str
    attempt: int
    startedAt: int | None
    finishedAt: int | None
    errCode: str | None


@with_config(CLOSED)
class TimelineTask(TypedDict):
    workflowID: str
    taskKey: str
    parentWorkflowID: str | None
    status: str
    queueName: str
    partitionKey: str | None
    enqueuedAt: int
    startedAt: int | None
    finishedAt: int | None
    attempts: int
    errCode: str | None


@with_config(CLOSED)
class Timeline(TypedDict):
    """`GET /api/ui/runs/:wid/timeline`."""

    runId: str
    workflowID: str
    status: RunStatus
    createdAt: int
    updatedAt: int
    now: int
    steps: list[TimelineStep]
    tasks: list[TimelineTask]


@with_config(CLOSED)
class QueueDepth(TypedDict):
    """One queue and partition: ENQUEUED (waiting) and PENDING (running or parked) workflows."""

    queueName: str
    partitionKey: str | None
    enqueued: int
    pending: int
    oldestEnqueuedAt: int | None


RUN_SUMMARIES: TypeAdapter[list[RunSummary]] = TypeAdapter(list[RunSummary])
TIMELINE: TypeAdapter[Timeline] = TypeAdapter(Timeline)
QUEUE_DEPTHS: TypeAdapter[list[QueueDepth]] = TypeAdapter(list[QueueDepth])


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else epoch_ms(ts)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def recent_runs(c: Conn, query: RecentRunsQuery) -> list[RunSummary]:
    rows = c.execute(Q["ui_recent_runs"], {"status": query.status, "limit": query.limit}).fetchall()
    out = [
        {
            "runId": r["id"],
            "workflowID": r["workflow_id"],
            "status": r["status"],
            "goal": r["goal"],
            "partitionKey": r["queue_partition_key"],
            "lastStep": r["last_step"],
            "nextAction": r["next_action"],
            "error": r["error"],
            "retryCount": r["retry_count"],
            "createdAt": epoch_ms(r["created_at"]),
            "updatedAt": epoch_ms(r["updated_at"]),
        }
        for r in rows
    ]
    result: list[RunSummary] = checked(RUN_SUMMARIES, out)
    return result


def timeline(c: Conn, run: Row) -> Timeline:
    """The run's step attempts and sandbox tasks, with the server's clock (`now`) for open bars."""
    steps = c.execute(Q["ui_run_step_attempts"], {"run_id": run["id"]}).fetchall()
    tasks = c.execute(
        Q["ui_run_tasks"], {"run_id": run["id"], "workflow_id": run["workflow_id"], "queue": SBX_QUEUE}
    ).fetchall()
    body = {
        "runId": run["id"],
        "workflowID": run["workflow_id"],
        "status": run["status"],
        "createdAt": epoch_ms(run["created_at"]),
        "updatedAt": epoch_ms(run["updated_at"]),
        "now": clock.now_ms(),
        "steps": [
            {
                "stepId": s["step_id"],
                "phase": s["phase"],
                "attempt": s["attempt"],
                "startedAt": _ms(s["started_at"]),
                "finishedAt": _ms(s["finished_at"]),
                "errCode": s["err_code"],
            }
            for s in steps
        ],
        "tasks": [
            {
                "workflowID": t["workflow_id"],
                "taskKey": t["workflow_id"][:64],
                "parentWorkflowID": t["parent_workflow_id"],
                "status": t["status"],
                "queueName": t["queue_name"],
                "partitionKey": t["queue_partition_key"],
                "enqueuedAt": int(t["enqueued_at"]),
                "startedAt": _int_or_none(t["started_at"]),
                "finishedAt": _int_or_none(t["finished_at"]),
                "attempts": int(t["attempts"] or 0),
                "errCode": t["err_code"],
            }
            for t in tasks
        ],
    }
    result: Timeline = checked(TIMELINE, body)
    return result


def queue_depth(c: Conn) -> list[QueueDepth]:
    rows = c.execute(Q["ui_queue_depth"]).fetchall()
    out = [
        {
            "queueName": r["queue_name"],
            "partitionKey": r["queue_partition_key"],
            "enqueued": int(r["enqueued"]),
            "pending": int(r["pending"]),
            "oldestEnqueuedAt": _int_or_none(r["oldest_enqueued_at"]),
        }
        for r in rows
    ]
    result: list[QueueDepth] = checked(QUEUE_DEPTHS, out)
    return result
