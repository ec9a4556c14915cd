"""The intent product: intents, runs, the four-step intent workflow, approval and repair.

Names here are contract (contract-api §7, contract-internals §3.1): the runbooks' SQL and the
HTTP projections read them verbatim.
"""

from __future__ import annotations

# Queue names are defined once, in kodo.queues; re-exported for the product's modules.
from kodo.queues import CONTROL_QUEUE as CONTROL_QUEUE
from kodo.queues import INTENT_QUEUE as INTENT_QUEUE
from kodo.queues import SBX_QUEUE as SBX_QUEUE

# Durable workflows (names recorded in dbos.workflow_status.name).
RUN_WORKFLOW = "IntentWorkflow.run"  # args (workflow_id,), id = intent id, queue intentQ
REPAIR_WORKFLOW = "IntentWorkflow.repair"  # args (run_id, repair_no), id repair_workflow_id(), controlQ
TASK_WORKFLOW = (
    "IntentWorkflow.taskWorkflow"  # args (task, run_id, base), id = task_key (+-r<n> / -f<fork id>), sbxQ
)

# The one topic both /events and approve-plan post to; the gates wait on it.
HUMAN_EVENT_TOPIC = "human-event"
# What the run writes for its watchers (dbos.notifications; the run stream serves them): its status
# changes and product-step completions to the run's workflow id, sandbox output to the task key.
STATUS_TOPIC = "status"
STEP_TOPIC = "step"
OUTPUT_TOPICS = ("stdout", "stderr", "stream_closed")
GATE_TIMEOUT_S = 300.0

# Product steps, in order, with their phases (run_steps.phase, StepRow.name).
STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")
PHASES = {
    "CompileST": "compilation",
    "ApplyPatchST": "patching",
    "DecideST": "planning",
    "ExecuteST": "execution",
}

# app.runs.status values the service checks (the full set: projections.RunStatus): a run at a gate
# takes human events, and a repair starts only from a failed run.
WAITING_INPUT = "waiting_input"
RETRYABLE_RUN_STATUSES = frozenset({"failed", "retries_exceeded"})

# app.runs.next_action
APPROVE_PLAN, NONE, REPAIR = "APPROVE_PLAN", "NONE", "REPAIR"


def repair_workflow_id(run_id: str, repair_no: int) -> str:
    """`repair-<runId>` for the first repair (the original's id), `repair-<runId>-<n>` after."""
    return f"repair-{run_id}" if repair_no <= 1 else f"repair-{run_id}-{repair_no}"
