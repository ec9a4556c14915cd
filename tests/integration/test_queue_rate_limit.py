"""Rate windows (seed 000 L09, `queue-rate-limit`): per partition, as the original's partitioned sbxQ
counted them, and for the whole queue; the window that reopens rings the next task on time."""

from __future__ import annotations

from collections.abc import Callable

from kodo.runtime import Runtime
from tests.support import procs
from tests.support.admission import Limits, fan_out, intervals, two_sbx_workers, wait_all
from tests.support.helpers import Sql


def test_rate_limit_counts_per_partition_and_the_window_rings_on_time(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(partition_rate="2/5")
    # A slow reconciler sweep (30 s): only the window's own timer can admit the third children on
    # time, pushed when the window reopens, not found by a poll.
    two_sbx_workers(start_worker, concurrency=2, KODO_RECONCILE_MS="30000")
    fan_out(rt, "ra", 3, 0.05, "tenant-a")
    fan_out(rt, "rb", 3, 0.05, "tenant-b")
    wait_all(rt, "ra", "rb", timeout=30)
    for parent in ("ra", "rb"):
        starts = [s["start"] for s in intervals(sql, "parent_workflow_id = %(p)s", {"p": parent})]
        assert len(starts) == 3
        assert starts[1] - starts[0] < 2000, starts  # two at once: the window admits two
        assert starts[2] - starts[0] >= 4500, starts  # the third waits for the window
        assert starts[2] - starts[0] < 7500, starts  # ... and starts when it reopens
    # Per partition: tenant-b's first two did not wait behind tenant-a's window.
    a = intervals(sql, "parent_workflow_id = 'ra'", {})
    b = intervals(sql, "parent_workflow_id = 'rb'", {})
    assert abs(b[1]["start"] - a[0]["start"]) < 3000


def test_queue_rate_limit_spans_partitions(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(rate="2/5")
    two_sbx_workers(start_worker, concurrency=2)
    fan_out(rt, "qa", 2, 0.05, "tenant-a")
    fan_out(rt, "qb", 1, 0.05, "tenant-b")
    wait_all(rt, "qa", "qb", timeout=30)
    starts = [s["start"] for s in intervals(sql, "parent_workflow_id IN ('qa', 'qb')", {})]
    assert len(starts) == 3
    assert starts[2] - starts[0] >= 4500, starts
