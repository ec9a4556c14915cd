"""OTLPSmoke.run: the one-step workflow of `mise run otlp:smoke` (`ops.otlpsmoke`).

Its step OTLPSmokeST writes an app.run_steps row carrying the trace and span ids of the step's own
span (`context.trace_ids()`, set by the tracing hook), in the step's transaction. With tracing off
both ids are NULL, which the smoke reports.
"""

from __future__ import annotations

from typing import Any

from kodo import workflow as wf
from kodo.db.queries import Q
from kodo.queues import CONTROL_QUEUE
from kodo.workflow import context

SMOKE_WORKFLOW = "OTLPSmoke.run"


@wf.transaction(name="OTLPSmokeST")
def smoke_step(conn: Any, run_id: str) -> dict[str, str | None]:
    ids = context.trace_ids()
    conn.execute(Q["otlp_smoke_step"], {"run_id": run_id, **ids._asdict()})
    conn.execute(Q["otlp_smoke_finish"], {"run_id": run_id})
    return ids._asdict()


@wf.workflow(name=SMOKE_WORKFLOW, queue=CONTROL_QUEUE)
def otlp_smoke(run_id: str) -> dict[str, str | None]:
    return smoke_step(run_id)


def create_run(conn: Any, run_id: str, workflow_id: str) -> None:
    """The intent and run rows the smoke's step row belongs to (in the caller's transaction)."""
    conn.execute(Q["otlp_smoke_intent"], {"intent_id": f"it_{run_id}"})
    conn.execute(
        Q["otlp_smoke_run"], {"run_id": run_id, "intent_id": f"it_{run_id}", "workflow_id": workflow_id}
    )


def read_ids(conn: Any, run_id: str) -> tuple[str | None, str | None] | None:
    row = conn.execute(Q["otlp_smoke_read"], {"run_id": run_id}).fetchone()
    return None if row is None else (row["trace_id"], row["span_id"])
