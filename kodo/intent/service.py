"""The intent product's commands behind the HTTP API: create intents, start, approve, message, repair.

Each command is one transaction, and anything published to the broker goes out after it commits.
Callers validate first and in the contract's order: nothing here re-checks schemas or the queue policy,
and the run-state rules (`check_accepts_event`, `check_retryable`) are called by them. Errors are kodo
errors (`kodo.errors`); `kodo.api.errors` maps them to HTTP. Must not import flask.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from kodo.config import Settings
from kodo.db.jsonb import Jsonb
from kodo.db.pool import Conn, Database
from kodo.db.queries import Q
from kodo.errors import KodoError, NotFoundError, RunStateError
from kodo.intent import (
    CONTROL_QUEUE,
    HUMAN_EVENT_TOPIC,
    INTENT_QUEUE,
    REPAIR_WORKFLOW,
    RETRYABLE_RUN_STATUSES,
    RUN_WORKFLOW,
    WAITING_INPUT,
    repair_workflow_id,
)
from kodo.intent.ids import INTENT_PREFIX, RUN_PREFIX, IdGenerator
from kodo.intent.policy import QueuePolicy
from kodo.intent.policy import recipes as list_recipes
from kodo.intent.policy import request_schema as policy_schema
from kodo.intent.policy import resolve as resolve_policy
from kodo.intent.requests import Intent, RunEvent, RunRequest
from kodo.intent.workflow import from_step
from kodo.workflow.client import Client, Started

Row = dict[str, Any]


class RunStartError(KodoError):
    """The run row was written but its workflow could not be enqueued; the row is now `failed`."""

    code = "run_start_failed"


class RunDivergenceError(KodoError):
    """A workflow id already belongs to a run of another intent."""

    code = "run_divergence"


class Backend(Protocol):
    """What the service needs of the process's wiring (`kodo.runtime.Runtime` has it)."""

    settings: Settings
    db: Database
    client: Client


def check_accepts_event(run: Row) -> None:
    """Only a run waiting for input takes a human event; RunStateError otherwise."""
    if run["status"] != WAITING_INPUT:
        raise RunStateError(f"cannot send event to run in status {run['status']}", run_status=run["status"])


def check_retryable(run: Row) -> None:
    """Only a failed run can be repaired; RunStateError otherwise."""
    if run["status"] not in RETRYABLE_RUN_STATUSES:
        raise RunStateError(f"cannot retry run in status {run['status']}", run_status=run["status"])


class IntentService:
    """Intents and runs over one Runtime (its settings, database and workflow client)."""

    def __init__(self, runtime: Backend, ids: IdGenerator | None = None) -> None:
        self.settings = runtime.settings
        self.db = runtime.db
        self.client = runtime.client
        self.ids = ids or IdGenerator(runtime.settings.random_seed)

    # ---- intents ------------------------------------------------------------------------------

    def create_intent(self, intent: Intent) -> str:
        """Insert the intent under a fresh id and return the id."""
        payload: dict[str, Any] = {"inputs": intent.inputs, "constraints": intent.constraints}
        if "connectors" in intent.model_fields_set:
            payload["connectors"] = intent.connectors
        with self.db.conn() as c:
            for intent_id in self.ids.candidates(INTENT_PREFIX):
                params = {"id": intent_id, "goal": intent.goal, "payload": Jsonb(payload)}
                if c.execute(Q["api_insert_intent"], params).fetchone() is not None:
                    return intent_id
        raise AssertionError("unreachable: candidates() raises when exhausted")

    def find_intent(self, intent_id: str) -> Row | None:
        with self.db.conn() as c:
            return c.execute(Q["api_find_intent"], {"id": intent_id}).fetchone()

    # ---- runs ---------------------------------------------------------------------------------

    def get_run(self, id_or_workflow_id: str) -> Row:
        """A run by its run id or its workflow id; NotFoundError `run not found` when there is none."""
        with self.db.conn() as c:
            run = c.execute(Q["api_find_run"], {"id": id_or_workflow_id}).fetchone()
        if run is None:
            raise NotFoundError("run not found")
        return run

    def run_policy_schema(self) -> dict[str, Any]:
        """The queue policy as a JSON Schema over RunRequest (the document's part of it)."""
        with self.db.conn() as c:
            recipes = list_recipes(c)
        return policy_schema(recipes, partition_law=self.settings.sbx_queue_partition)

    def start_run(self, intent_id: str, req: RunRequest) -> Row:
        """Idempotent start (contract-api §6.2): the queue policy is resolved (QueuePolicyError when
        it fails, before anything is written) and the run row and its workflow row commit together,
        in one transaction.

        A repeat start returns the existing row and enqueues nothing: its workflow was committed
        with it. If instead its enqueue failed (the row says `failed`, and no workflow exists: a
        `deduplicationID` still held by another run), the repeat tries the enqueue again, under the
        same run id with this request's fields: a failed start never blocks the intent.
        """
        started: Started | None = None
        failure: Exception | None = None
        with self.db.tx() as c:
            policy = resolve_policy(c, req, partition_law=self.settings.sbx_queue_partition)
            run, created = self._insert_run(c, intent_id, req, policy)
            if not created:
                if run["intent_id"] != intent_id:
                    raise RunDivergenceError(
                        f"Divergence in run {run['id']}: workflow {intent_id} belongs to intent "
                        f"{run['intent_id']}"
                    )
                restarted = c.execute(
                    Q["api_restart_failed_run"],
                    {
                        "id": run["id"],
                        "trace_id": req.trace_id,
                        "tenant_id": req.tenant_id,
                        "queue_partition_key": policy.queue_partition_key,
                    },
                ).fetchone()
                if restarted is None:
                    return run
                run = restarted
            try:
                # start_txn runs in a savepoint, so a failed insert leaves this transaction usable.
                started = self.client.start_txn(
                    c,
                    RUN_WORKFLOW,
                    (intent_id,),
                    {},
                    workflow_id=intent_id,
                    queue=INTENT_QUEUE,
                    priority=policy.priority or 0,
                    deduplication_id=policy.deduplication_id,
                    timeout_ms=policy.timeout_ms,
                )
            except Exception as exc:
                failure = exc
                run = c.execute(Q["api_mark_run_failed"], {"id": run["id"]}).fetchone() or run
        if failure is not None:
            raise RunStartError(f"enqueue of run {run['id']} failed: {failure}") from failure
        assert started is not None
        self.client.publish_started(started)
        return run

    def _insert_run(self, c: Conn, intent_id: str, req: RunRequest, policy: QueuePolicy) -> tuple[Row, bool]:
        """Insert the run under a fresh id, or find the intent's existing run: (row, created)."""
        for run_id in self.ids.candidates(RUN_PREFIX):
            row = c.execute(
                Q["api_insert_run"],
                {
                    "id": run_id,
                    "intent_id": intent_id,
                    "workflow_id": intent_id,
                    "trace_id": req.trace_id,
                    "tenant_id": req.tenant_id,
                    "queue_partition_key": policy.queue_partition_key,
                },
            ).fetchone()
            if row is not None:
                return row, True
            existing = c.execute(Q["api_run_by_workflow_id"], {"workflow_id": intent_id}).fetchone()
            if existing is not None:
                return existing, False
            # Neither inserted nor the intent's run: the drawn run id is taken. Draw again.
        raise AssertionError("unreachable: candidates() raises when exhausted")

    # ---- human input and repair ---------------------------------------------------------------

    def approve_plan(self, run: Row, approved_by: str, notes: str | None) -> datetime:
        """Record the approval; wake the run if it is waiting. Returns approved_at (from the DB)."""
        with self.db.tx() as c:
            locked = c.execute(Q["lock_run"], {"run_id": run["id"]}).fetchone()  # see intent.sql
            status = None if locked is None else locked["status"]
            row = c.execute(
                Q["api_upsert_plan_approval"],
                {"run_id": run["id"], "approved_by": approved_by, "notes": notes},
            ).fetchone()
        assert row is not None
        # The approval is the row; the message only wakes a run parked at a gate. A gate that has
        # not parked yet will see the row (it reads it under the same row lock).
        if status == WAITING_INPUT:
            message = {"type": "approve-plan", "payload": {"approvedBy": approved_by}}
            self.client.send(run["workflow_id"], message, topic=HUMAN_EVENT_TOPIC)
        approved_at: datetime = row["approved_at"]
        return approved_at

    def send_event(self, run: Row, event: RunEvent) -> None:
        """Deliver the whole event `{type, payload}` to the run's workflow (uninterpreted)."""
        message = {"type": event.type, "payload": event.payload}
        self.client.send(run["workflow_id"], message, topic=HUMAN_EVENT_TOPIC)

    def retry(self, run: Row) -> str:
        """Start the next repair of a failed run; returns `fromStep` (contract-api §4.8).

        The repair number is retry_count + 1, so a repeated request before the repair starts maps
        to the same repair workflow id (idempotent), and each later repair gets its own id.
        """
        with self.db.conn() as c:
            done = {r["step_id"] for r in c.execute(Q["api_run_steps"], {"run_id": run["id"]}).fetchall()}
        step = from_step(done)
        repair_no = int(run["retry_count"]) + 1
        self.client.start(
            REPAIR_WORKFLOW,
            run["id"],
            repair_no,
            workflow_id=repair_workflow_id(run["id"], repair_no),
            queue=CONTROL_QUEUE,
        )
        return step
