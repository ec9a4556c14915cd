"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
        assert rt.engine.insert_workflow(c, wf, args, {}, workflow_id=workflow_id, **options)
