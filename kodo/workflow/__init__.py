"""The durable workflow layer: declare workflows and steps, and the calls a workflow body may make.

from kodo import workflow as wf

@wf.step()
def fetch(url: str) -> str: ...

@wf.workflow(queue="intentQ")
def pipeline(url: str) -> str:
    body = fetch(url)       # checkpointed; replayed on re-execution
    wf.sleep(5)             # durable; holds no worker while it waits
    return body

@wf.scheduled(every_ms=30_000)  # started once per 30 s tick across the fleet (kodo.workflow.scheduler)
@wf.workflow(queue="controlQ")
def tick(scheduled_ms: int, started_ms: int) -> None: ...
"""

from kodo.workflow.context import (
    current_workflow_id,
    get_result,
    recv,
    send,
    sleep,
    start_child,
    start_children,
    wait_children,
)
from kodo.workflow.registry import RetryPolicy, step, transaction, workflow
from kodo.workflow.scheduler import scheduled

__all__ = [
    "RetryPolicy",
    "current_workflow_id",
    "get_result",
    "recv",
    "scheduled",
    "send",
    "sleep",
    "start_child",
    "start_children",
    "step",
    "transaction",
    "wait_children",
    "workflow",
]
