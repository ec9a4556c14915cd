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
