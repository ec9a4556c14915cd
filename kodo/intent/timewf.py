"""The time primitives (contract-api §4.10, §10; contract-internals §8): the durable sleep behind
`POST /api/ops/sleep` and the scheduled tick.

* `TimeWorkflow.sleepWorkflow(wf, sleepMs)` on controlQ, id `<wf>`: the artifact set of step
  `sleep-before-sleep`, a durable sleep (its wake-up time is recorded when it starts, so a restart
  wakes it at start + sleepMs, or at once if that has passed), then the set of `sleep-after-sleep`.
  Its synthetic intent `it-utility-<wf>` (goal `utility-sleep`) and run (id = workflow id = `<wf>`,
  status `running`) commit in the transaction that starts it, after the request was validated.
* `ScheduledOpsWorkflow.tick(schedTime, startTime)`, every `KODO_SCHEDULE_TICK_MS` (30 s; 0 = off)
  through `kodo.workflow.scheduler`: ensures intent `scheduled-ops` and the run `sched-<schedTime ms>`
  (status `succeeded`) and writes the artifact set of step `ScheduledTick`, stdout `Tick for <ISO>`.

Each artifact set is the sandbox layout (`artifact_index` at idx 0, then timings, raw, stderr, stdout),
task key '', attempt 1, written in the step's own transaction: exactly once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kodo import clock
from kodo import workflow as wf
from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn, Database
from kodo.db.queries import Q
from kodo.errors import ConflictError
from kodo.intent import CONTROL_QUEUE, artifacts
from kodo.intent.projections import iso
from kodo.workflow import context
from kodo.workflow.client import Client

log = logging.getLogger(__name__)

SLEEP_WORKFLOW = "TimeWorkflow.sleepWorkflow"
TICK_WORKFLOW = "ScheduledOpsWorkflow.tick"
SLEEP_STEPS = {"before-sleep": "sleep-before-sleep", "after-sleep": "sleep-after-sleep"}
TICK_STEP = "ScheduledTick"
SCHEDULED_INTENT = "scheduled-ops"

DEFAULT_SLEEP_MS = 5000
MAX_SLEEP_MS = 86_400_000  # one day
# A workflow id that is also a run id and a segment of artifact URIs: no '/', no blanks.
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_WORKFLOW_ID = 128


class SleepWorkflowRequest(BaseModel):
    """The query of `POST /api/ops/sleep` (HEAD's SleepWorkflowRequest, checked before any write)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="SleepWorkflowRequest")

    wf: Annotated[str, Field(min_length=1, max_length=MAX_WORKFLOW_ID, pattern=WORKFLOW_ID_PATTERN)]
    sleep: Annotated[int, Field(ge=1, le=MAX_SLEEP_MS)] = DEFAULT_SLEEP_MS


class Backend(Protocol):
    """What starting a sleep needs of the process's wiring (`kodo.runtime.Runtime` has it)."""

    db: Database
    client: Client


def _iso(epoch_ms: int) -> str:
    return iso(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


def _ensure_intent(c: Conn, intent_id: str, goal: str) -> None:
    payload: dict[str, Any] = {"inputs": {}, "constraints": {}}
    c.execute(Q["time_ensure_intent"], {"id": intent_id, "goal": goal, "payload": Jsonb(payload)})


def _artifact_set(
    c: Conn, run_id: str, step: str, provider: str, stdout: str, raw: dict[str, Any], metrics: dict[str, Any]
) -> str:
    result = {"stdout": stdout, "stderr": "", "raw": raw, "metrics": metrics}
    return artifacts.sandbox_set(c, run_id, "", 1, result, provider, step=step)


# ---- durable sleep ------------------------------------------------------------------------------


@wf.transaction("TimeWorkflow.recordWakeMetadata")
def record_wake_metadata(c: Conn, workflow_id: str, phase: str, sleep_ms: int) -> str:
    now = clock.now_ms()
    at = _iso(now)
    return _artifact_set(
        c,
        workflow_id,
        SLEEP_STEPS[phase],
        "time",
        f"{phase}: sleepMs={sleep_ms} at {at}",
        {"phase": phase, "sleepMs": sleep_ms, "timestamp": at},
        {"sleepMs": sleep_ms, "timestampMs": now},
    )


@wf.workflow(SLEEP_WORKFLOW, queue=CONTROL_QUEUE)
def sleep_workflow(workflow_id: str, sleep_ms: int) -> dict[str, Any]:
    record_wake_metadata(workflow_id, "before-sleep", sleep_ms)
    wf.sleep(sleep_ms / 1000)
    record_wake_metadata(workflow_id, "after-sleep", sleep_ms)
    return {"success": True, "workflowId": workflow_id, "sleepMs": sleep_ms}


def start_sleep(backend: Backend, workflow_id: str, sleep_ms: int) -> bool:
    """Start the durable sleep `workflow_id` (a validated request); True if it was created now.

    Idempotent: a repeat returns the existing sleep (never re-run, nor its length changed). An id
    taken by another workflow, or by a run that is not this sleep's own, is a ConflictError, and
    then nothing is written.
    """
    with backend.db.tx() as c:
        _ensure_intent(c, f"it-utility-{workflow_id}", "utility-sleep")
        c.execute(
            Q["time_ensure_run"],
            {"id": workflow_id, "intent_id": f"it-utility-{workflow_id}", "status": "running"},
        )
        owners = c.execute(Q["time_run_owner"], {"id": workflow_id}).fetchall()
        if [(r["id"], r["workflow_id"]) for r in owners] != [(workflow_id, workflow_id)]:
            raise ConflictError(f"workflow id {workflow_id} belongs to another run")
        started = backend.client.start_txn(
            c, sleep_workflow, (workflow_id, sleep_ms), {}, workflow_id=workflow_id
        )
        if not started.created:
            name = backend.client.get(workflow_id)["name"]
            if name != SLEEP_WORKFLOW:
                raise ConflictError(f"workflow {workflow_id} already exists as {name}")
    backend.client.publish_started(started)
    return started.created


# ---- the scheduled tick -------------------------------------------------------------------------


@wf.transaction("ScheduledOpsWorkflow.recordTick")
def record_tick(c: Conn, sched_ms: int, start_ms: int) -> str:
    run_id = f"sched-{sched_ms}"
    sched_time, start_time = _iso(sched_ms), _iso(start_ms)
    _ensure_intent(c, SCHEDULED_INTENT, "Scheduled Ops")
    c.execute(Q["time_ensure_run"], {"id": run_id, "intent_id": SCHEDULED_INTENT, "status": "succeeded"})
    _artifact_set(
        c,
        run_id,
        TICK_STEP,
        "scheduler",
        f"Tick for {sched_time}",
        {"schedTime": sched_time, "startTime": start_time},
        {"schedTimeMs": sched_ms, "startTimeMs": start_ms, "lagMs": start_ms - sched_ms},
    )
    event = {
        "event": "scheduled-tick",
        "schedTime": sched_time,
        "startTime": start_time,
        "workflowName": TICK_WORKFLOW,
        "applicationVersion": context.settings().app_version,
        "workflowId": wf.current_workflow_id(),
    }
    log.info(json.dumps(event))
    return run_id


@wf.scheduled(lambda settings: settings.schedule_tick_ms)
@wf.workflow(TICK_WORKFLOW, queue=CONTROL_QUEUE)
def tick(sched_ms: int, start_ms: int) -> dict[str, Any]:
    return {"runId": record_tick(sched_ms, start_ms), "schedTime": _iso(sched_ms)}
