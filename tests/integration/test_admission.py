"""Flow control (issue 9): concurrency caps, per-worker caps, rate windows, priority and fairness hold
across real worker processes, decided in Postgres (`dbos.kodo_admit`, `kodo.workflow.admission`).

The children record when their one step held a worker slot (`t.timed`: start, end, worker node), so
overlaps are measured from what ran, not from what the engine believes. Every test sets exact
limits on sbxQ (all fields, so the environment's defaults play no part) and drops them afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kodo import clock
from kodo.runtime import Runtime
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import Sql

QUEUE_FIELDS = (
    "concurrency",
    "worker_concurrency",
    "rate",
    "partition_concurrency",
    "partition_worker_concurrency",
    "partition_rate",
)
Limits = Callable[..., None]


@pytest.fixture
def limits(rt: Runtime, sql: Sql) -> Iterator[Limits]:
    def put(partition: str | None = None, **values: Any) -> None:
        if partition is None:
            values = {f: None for f in QUEUE_FIELDS} | values
        rt.set_limits("sbxQ", partition, values)

    yield put
    sql("DELETE FROM dbos.queue_partition_limits")
    sql("DELETE FROM dbos.queue_limits")


def intervals(sql: Sql, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """What each finished child's step did: {id, partition, start, end, node}, by start."""
    rows = sql(
        "SELECT workflow_uuid, queue_partition_key, output FROM dbos.workflow_status "
        f"WHERE name = 't.timed' AND status = 'SUCCESS' AND {where}",
        params,
    )
    out = [
        {"id": r["workflow_uuid"], "partition": r["queue_partition_key"], **json.loads(r["output"])}
        for r in rows
    ]
    return sorted(out, key=lambda i: (i["start"], i["id"]))


def max_overlap(spans: list[dict[str, Any]]) -> int:
    """The most spans running at one moment (an end at the same ms as a start does not overlap)."""
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def fan_out(rt: Runtime, wid: str, n: int, hold_s: float, partition: str | None) -> None:
    rt.client.start(t.timed_fan_out, n, hold_s, partition, workflow_id=wid)


def wait_all(rt: Runtime, *wids: str, timeout: float = 60) -> None:
    for wid in wids:
        assert rt.client.wait(wid, timeout)["status"] == "SUCCESS", wid


def two_sbx_workers(start_worker: Callable[..., procs.WorkerProc], concurrency: int, **env: str) -> None:
    start_worker(name="intent", queues="intentQ", concurrency=2, env=env)
    start_worker(name="sbx1", queues="sbxQ", concurrency=concurrency, env=env)
    start_worker(name="sbx2", queues="sbxQ", concurrency=concurrency, env=env)


def test_queue_cap_holds_across_two_workers(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=2)
    two_sbx_workers(start_worker, concurrency=3)  # 6 slots, cap 2
    fan_out(rt, "cap", 8, 0.4, "p1")
    wait_all(rt, "cap")
    spans = intervals(sql, "parent_workflow_id = %(p)s", {"p": "cap"})
    assert len(spans) == 8
    assert max_overlap(spans) == 2  # never more than the cap, and the cap was used
    assert len({s["node"] for s in spans}) == 2  # both workers took part
    # Waiting children held no slot: none was admitted beyond the cap at any time.
    assert (
        sql("SELECT count(*) AS n FROM dbos.workflow_status WHERE admitted_at_epoch_ms IS NOT NULL")[0]["n"]
        == 0
    )


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


@pytest.mark.parametrize("scope", ["worker_concurrency", "partition_worker_concurrency"])
def test_per_worker_cap_holds_on_each_worker(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits, scope: str
) -> None:
    limits(**{scope: 1})
    two_sbx_workers(start_worker, concurrency=3)
    fan_out(rt, "wc", 8, 0.4, "p1")
    wait_all(rt, "wc")
    spans = intervals(sql, "parent_workflow_id = %(p)s", {"p": "wc"})
    assert len(spans) == 8
    nodes = {s["node"] for s in spans}
    assert len(nodes) == 2
    for node in nodes:
        assert max_overlap([s for s in spans if s["node"] == node]) == 1  # 3 processes, cap 1
    assert max_overlap(spans) == 2  # one on each worker at once


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


def test_fairness_a_small_tenant_is_not_starved_by_a_large_backlog(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=2)
    start_worker(name="sbx1", queues="sbxQ", concurrency=1)
    start_worker(name="sbx2", queues="sbxQ", concurrency=1)
    for i in range(200):
        rt.client.start(t.timed, 0.0, workflow_id=f"fa-{i:03d}", partition_key="tenant-a")
    for i in range(10):
        rt.client.start(t.timed, 0.0, workflow_id=f"fb-{i:02d}", partition_key="tenant-b")
    wait_all(rt, *(f"fb-{i:02d}" for i in range(10)))
    b_done = max(s["end"] for s in intervals(sql, "workflow_uuid LIKE 'fb-%%'", {}))
    wait_all(rt, *(f"fa-{i:03d}" for i in range(200)), timeout=120)
    a = intervals(sql, "workflow_uuid LIKE 'fa-%%'", {})
    assert len(a) == 200
    a_before_b = sum(1 for s in a if s["end"] <= b_done)
    assert a_before_b < 100, a_before_b  # all of B's finished before half of A's


def test_priority_orders_admission_when_enabled(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=1, priority="on")
    for i in range(4):
        rt.client.start(t.timed, 0.05, workflow_id=f"pr-low-{i}", priority=5)
    rt.client.start(t.timed, 0.05, workflow_id="pr-high", priority=1)
    start_worker(name="sbx1", queues="sbxQ", concurrency=2)
    wait_all(rt, "pr-high", *(f"pr-low-{i}" for i in range(4)))
    order = [s["id"] for s in intervals(sql, "workflow_uuid LIKE 'pr-%%'", {})]
    # pr-low-0 took the free slot when it was started; the high priority row is next.
    assert order[:2] == ["pr-low-0", "pr-high"], order


def test_a_completion_rings_the_next_admitted_row_at_once(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=1)
    start_worker(name="intent", queues="intentQ", concurrency=1, env={"KODO_RECONCILE_MS": "30000"})
    start_worker(name="sbx1", queues="sbxQ", concurrency=2, env={"KODO_RECONCILE_MS": "30000"})
    fan_out(rt, "push", 5, 0.2, "p1")
    wait_all(rt, "push", timeout=30)
    spans = intervals(sql, "parent_workflow_id = 'push'", {})
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(spans)]
    assert max_overlap(spans) == 1
    assert max(gaps) < 1000, gaps  # the reconciler sweeps every 30 s: only the completion rang


def test_a_limit_changed_at_run_time_applies_without_a_restart(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(concurrency=1)
    two_sbx_workers(start_worker, concurrency=3)
    fan_out(rt, "live", 12, 0.5, "p1")
    deadline = time.monotonic() + 30
    while len(intervals(sql, "parent_workflow_id = 'live'", {})) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    changed_at = clock.now_ms()
    # The operator's command, in its own process (no worker is restarted or told).
    out = subprocess.run(
        [sys.executable, "-m", "ops", "queue", "set", "sbxQ", "--concurrency", "3"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "concurrency 3" in out.stdout
    wait_all(rt, "live")
    spans = intervals(sql, "parent_workflow_id = 'live'", {})
    before = [s for s in spans if s["start"] < changed_at]
    after = [s for s in spans if s["start"] >= changed_at]
    assert max_overlap(before) == 1
    assert max_overlap(after) == 3
    # Applied within a second of the change.
    third = sorted(after, key=lambda s: s["start"])[:3]
    assert third[-1]["start"] - changed_at < 1500, [s["start"] - changed_at for s in third]


def test_work_of_an_unserved_version_waits_under_the_limits_and_drains_when_its_worker_starts(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits, version: str
) -> None:
    limits(concurrency=2)
    other = version + "-next"
    for i in range(3):
        rt.client.start(t.timed, 0.05, workflow_id=f"vn-{i}", app_version=other, partition_key="p1")
    start_worker(name="sbx1", queues="sbxQ", concurrency=2)
    for i in range(3):
        rt.client.start(t.timed, 0.05, workflow_id=f"vc-{i}", partition_key="p1")
    wait_all(rt, *(f"vc-{i}" for i in range(3)))
    time.sleep(1)
    waiting = sql(
        "SELECT workflow_uuid, status, admitted_at_epoch_ms FROM dbos.workflow_status "
        "WHERE workflow_uuid LIKE 'vn-%%' ORDER BY 1"
    )
    # Not admitted: no slot held, no message in anyone's hands; this version's work ran past them.
    assert [(r["status"], r["admitted_at_epoch_ms"]) for r in waiting] == [("ENQUEUED", None)] * 3
    start_worker(name="sbx-next", queues="sbxQ", concurrency=2, env={"KODO_APP_VERSION": other})
    wait_all(rt, *(f"vn-{i}" for i in range(3)), timeout=30)
    assert max_overlap(intervals(sql, "workflow_uuid LIKE 'vn-%%'", {})) <= 2


def test_every_child_of_a_run_carries_its_partition_key(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    limits(partition_concurrency=3)
    two_sbx_workers(start_worker, concurrency=2)
    fan_out(rt, "keys", 5, 0.0, "tenant-k")
    wait_all(rt, "keys")
    kids = sql("SELECT queue_partition_key AS k FROM dbos.workflow_status WHERE parent_workflow_id = 'keys'")
    assert [r["k"] for r in kids] == ["tenant-k"] * 5


def test_an_invalid_limit_stops_start_up_with_a_clear_error() -> None:
    env = dict(os.environ, SBX_QUEUE_CONCURRENCY="fifty")
    out = subprocess.run(
        [sys.executable, "-m", "ops", "reconcile", "--once"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 1
    assert "invalid SBX_QUEUE_CONCURRENCY: fifty (a whole number >= 1, or none)" in out.stderr
