"""The kodo side of the engine benchmark: a workflow of four no-op steps on `intentQ`.

Workers import this module through KODO_WORKFLOW_MODULES=ops.bench.kodo_workflows.
"""

from __future__ import annotations

from kodo import workflow as wf


@wf.step(name="bench.noop")
def noop(i: int) -> int:
    return i


@wf.workflow(name="bench.four_noops", queue="intentQ")
def four_noops() -> int:
    total = 0
    for i in range(4):
        total += noop(i)
    return total


@wf.workflow(name="bench.task", queue="sbxQ")
def task(i: int) -> int:
    return noop(i)


@wf.workflow(name="bench.fan_out", queue="intentQ")
def fan_out(n: int, partition: str) -> int:
    """N sandbox-queue tasks started in one batch; the parent waits once for all of them."""
    me = wf.current_workflow_id()
    wf.start_children(task, [((i,), f"{me}-t{i}") for i in range(n)], queue="sbxQ", partition_key=partition)
    return len(wf.wait_children())
