"""Partitions (seed 000 L09, `queue-partition-fairness`): per-partition caps, round-robin fairness
across tenants, and the run's partition key on every child; on two real sbx worker processes."""

from __future__ import annotations

from collections.abc import Callable

from kodo.runtime import Runtime
from tests.support import procs
from tests.support import workflows as t
from tests.support.admission import Limits, fan_out, intervals, max_overlap, two_sbx_workers, wait_all
from tests.support.helpers import Sql


def test_partition_cap_counts_each_partition(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(partition_concurrency=2)
    two_sbx_workers(start_worker, concurrency=3)
    fan_out(rt, "pa", 6, 0.5, "tenant-a")
    fan_out(rt, "pb", 6, 0.5, "tenant-b")
    wait_all(rt, "pa", "pb")
    spans = intervals(sql, "parent_workflow_id IN ('pa', 'pb')", {})
    assert len(spans) == 12
    for p in ("tenant-a", "tenant-b"):
        assert max_overlap([s for s in spans if s["partition"] == p]) == 2
    assert max_overlap(spans) > 2  # the two partitions ran side by side: the cap is per partition


def test_fairness_a_small_tenant_is_not_starved_by_a_large_backlog(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=2)
    # Tenant A queues 200 tasks, then tenant B 10; then the workers take them (with workers already
    # running, how many of A's ran before B arrived would measure the starts' speed, not fairness).
    for i in range(200):
        rt.client.start(t.timed, 0.0, workflow_id=f"fa-{i:03d}", partition_key="tenant-a")
    for i in range(10):
        rt.client.start(t.timed, 0.0, workflow_id=f"fb-{i:02d}", partition_key="tenant-b")
    start_worker(name="sbx1", queues="sbxQ", concurrency=1)
    start_worker(name="sbx2", queues="sbxQ", concurrency=1)
    wait_all(rt, *(f"fb-{i:02d}" for i in range(10)))
    b_done = max(s["end"] for s in intervals(sql, "workflow_uuid LIKE 'fb-%%'", {}))
    wait_all(rt, *(f"fa-{i:03d}" for i in range(200)), timeout=120)
    a = intervals(sql, "workflow_uuid LIKE 'fa-%%'", {})
    assert len(a) == 200
    a_before_b = sum(1 for s in a if s["end"] <= b_done)
    assert a_before_b < 100, a_before_b  # all of B's finished before half of A's


def test_every_child_of_a_run_carries_its_partition_key(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(partition_concurrency=3)
    two_sbx_workers(start_worker, concurrency=2)
    fan_out(rt, "keys", 5, 0.0, "tenant-k")
    wait_all(rt, "keys")
    kids = sql("SELECT queue_partition_key AS k FROM dbos.workflow_status WHERE parent_workflow_id = 'keys'")
    assert [r["k"] for r in kids] == ["tenant-k"] * 5


def test_a_partition_override_gives_one_tenant_more(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(partition_concurrency=1)
    limits(partition="tenant-big", concurrency=3)  # its own cap
    two_sbx_workers(start_worker, concurrency=3)
    fan_out(rt, "big", 6, 0.4, "tenant-big")
    fan_out(rt, "small", 4, 0.4, "tenant-small")
    wait_all(rt, "big", "small")
    spans = intervals(sql, "parent_workflow_id IN ('big', 'small')", {})
    assert max_overlap([s for s in spans if s["partition"] == "tenant-big"]) == 3
    assert max_overlap([s for s in spans if s["partition"] == "tenant-small"]) == 1


def test_a_weight_gives_a_tenant_more_turns_under_a_shared_cap(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=3)
    limits(partition="tenant-heavy", weight=2)
    # Both backlogs are queued before any worker runs: each admission then chooses between them.
    for i in range(12):
        rt.client.start(t.timed, 0.3, workflow_id=f"wh-{i:02d}", partition_key="tenant-heavy")
        rt.client.start(t.timed, 0.3, workflow_id=f"wl-{i:02d}", partition_key="tenant-light")
    start_worker(name="sbx1", queues="sbxQ", concurrency=3)
    start_worker(name="sbx2", queues="sbxQ", concurrency=3)
    wait_all(rt, *(f"w{k}-{i:02d}" for k in "hl" for i in range(12)))
    spans = intervals(sql, "workflow_uuid LIKE 'w_-%%'", {})
    # While both have work, the heavy tenant holds two of the three slots and the light one one.
    both = min(max(s["end"] for s in spans if s["partition"] == p) for p in ("tenant-heavy", "tenant-light"))
    early = [s for s in spans if s["end"] <= both]
    heavy = sum(1 for s in early if s["partition"] == "tenant-heavy")
    light = sum(1 for s in early if s["partition"] == "tenant-light")
    assert max_overlap(spans) == 3
    assert max_overlap([s for s in early if s["partition"] == "tenant-light"]) == 1
    assert heavy >= 1.6 * light, (heavy, light)
