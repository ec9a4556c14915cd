"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kodo import clock
from kodo.db.pool import Conn
from kodo.runtime import Runtime
from kodo.workflow.registry import WorkflowDef

Sql = Callable[..., list[dict[str, Any]]]


def poll(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `cond()` holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)


def insert_unpublished(
    rt: Runtime, wf: WorkflowDef[..., Any], *args: Any, workflow_id: str, **options: Any
) -> None:
    """The enqueue transaction commits and no message is published (a lost publish, or a test that
    drives `engine.execute` itself).
    """
    c: Conn
    with rt.db.tx() as c:
        assert rt.client.start_txn(c, wf, args, {}, workflow_id=workflow_id, **options).created


def deliver_until_settled(rt: Runtime, workflow_id: str, timeout: float = 10.0) -> list[str]:
    """Deliver `workflow_id` in this process (as a worker would) until it no longer parks on a timer.

    Each time it parks with a wake-up time (a retry backoff, a short sleep), wait until that time,
    wake it with the reconciler's timer pass and deliver again. Returns every delivery's outcome.
    """
    reconciler = rt.reconciler()
    deadline = time.monotonic() + timeout
    outcomes = [str(rt.engine.execute(workflow_id))]
    while outcomes[-1] == "parked":
        wake_at = rt.client.get(workflow_id)["wake_at_epoch_ms"]
        if wake_at is None:
            break  # parked on something no timer ends (a message, a child)
        if time.monotonic() > deadline:
            raise AssertionError(f"{workflow_id} still parked after {timeout}s: {outcomes}")
        time.sleep(max(wake_at - clock.now_ms(), 0) / 1000)
        if reconciler.wake_timers():
            outcomes.append(str(rt.engine.execute(workflow_id)))
    return outcomes
