"""Flow control (issue 9): concurrency caps, per-worker caps, priority, push on completion, limits
changed at run time, versions and start-up validation, across real worker processes, decided in
Postgres (`dbos.kodo_admit`, `kodo.workflow.admission`). Partitions and rate windows have files of
their own (the runbooks' names): test_queue_partition_fairness.py, test_queue_rate_limit.py."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from kodo import clock
from kodo.config import Settings
from kodo.db import pool
from kodo.runtime import Runtime
from tests.support import procs
from tests.support import workflows as t
from tests.support.admission import Limits, fan_out, intervals, max_overlap, two_sbx_workers, wait_all
from tests.support.helpers import Sql


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


def test_admission_skips_a_row_another_transaction_holds_instead_of_deadlocking_with_it(
    rt: Runtime, sql: Sql, settings: Settings, limits: Limits, version: str
) -> None:
    # A cancel (or resume) holds a waiting row's lock and then admits, which takes the queue's
    # admission lock: an admission that held that lock and waited for the row would deadlock with it.
    limits(concurrency=5)
    sql("UPDATE dbos.queue_limits SET concurrency = 0 WHERE queue_name = 'sbxQ'")  # paused
    for i in range(3):
        rt.client.start(t.timed, 0.0, workflow_id=f"sk-{i}", partition_key="p1")
    sql("UPDATE dbos.queue_limits SET concurrency = 5 WHERE queue_name = 'sbxQ'")
    with pool.connect(settings.database_url) as holder, holder.transaction():
        holder.execute("SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = 'sk-0' FOR UPDATE")
        with pool.connect(settings.database_url) as admitter, admitter.transaction():
            admitter.execute("SET LOCAL lock_timeout = '2s'")
            got = admitter.execute(
                "SELECT workflow_uuid FROM dbos.kodo_admit('sbxQ', %s, %s, ARRAY[]::text[])",
                (version, clock.now_ms()),
            ).fetchall()
    assert sorted(r["workflow_uuid"] for r in got) == ["sk-1", "sk-2"]
    assert [r["workflow_uuid"] for r in sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid LIKE 'sk-%%'"
        " AND admitted_at_epoch_ms IS NULL"
    )] == ["sk-0"]  # fmt: skip


def test_the_slot_counters_match_the_rows_after_caps_cancels_and_resumes(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    # Admission counts slots from dbos.queue_slots plus the not yet folded dbos.queue_slot_deltas
    # (a trigger logs every change of a row's slot): they must always equal the rows holding one.
    limits(concurrency=2)
    for i in range(5):
        rt.client.start(t.timed, 0.2, workflow_id=f"sc-{i}", partition_key="p1")
    rt.client.cancel("sc-4")  # waiting: it held no slot
    rt.client.cancel("sc-0")  # admitted: its slot is freed
    rt.client.resume("sc-0")
    start_worker(name="sbx1", queues="sbxQ", concurrency=2)
    wait_all(rt, *(f"sc-{i}" for i in range(4)))

    def held_by_rows() -> dict[str, int]:
        rows = sql(
            "SELECT coalesce(queue_partition_key, '') AS p, count(*) AS n FROM dbos.workflow_status"
            " WHERE queue_name = 'sbxQ' AND admitted_at_epoch_ms IS NOT NULL GROUP BY 1"
        )
        return {r["p"]: r["n"] for r in rows}

    def held_by_counters() -> dict[str, int]:
        rows = sql(
            "SELECT p, sum(n) AS n FROM (SELECT partition_key AS p, held AS n FROM dbos.queue_slots"
            " WHERE queue_name = 'sbxQ' UNION ALL SELECT partition_key, delta FROM dbos.queue_slot_deltas"
            " WHERE queue_name = 'sbxQ') x GROUP BY p HAVING sum(n) <> 0"
        )
        return {r["p"]: r["n"] for r in rows}

    assert held_by_counters() == held_by_rows()
    # One still waits (cancelled sc-4 was resumed by nobody); admit a row by hand and compare again.
    rt.client.resume("sc-4")
    wait_all(rt, "sc-4")
    assert held_by_counters() == held_by_rows()


def test_a_start_with_room_is_admitted_by_its_insert_and_counted_once(
    rt: Runtime, sql: Sql, limits: Limits
) -> None:
    # Room and nothing else waiting: the INSERT admits the row (dbos.kodo_admit_new), one statement.
    # At the cap the next rows are inserted waiting and admission (kodo_admit) decides: here, no slot.
    limits(concurrency=2, partition_rate="100/60")
    started = [rt.client.start(t.timed, 0.0, workflow_id=f"ia-{i}", partition_key="ia-p") for i in range(3)]
    assert [b.admitted for s in started for b in s.doorbells] == [True, True, False]
    assert rt.client.start(t.timed, 0.0, workflow_id="ia-0", partition_key="ia-p").created is False
    rows = sql(
        "SELECT workflow_uuid, admitted_at_epoch_ms IS NOT NULL AS admitted, rate_at_epoch_ms IS NOT NULL"
        " AS rated FROM dbos.workflow_status WHERE workflow_uuid LIKE 'ia-%%' ORDER BY 1"
    )
    assert [(r["admitted"], r["rated"]) for r in rows] == [(True, True), (True, True), (False, False)]
    # Counted once each in the window (the repeated start of ia-0 inserted nothing: counted nothing).
    assert sql("SELECT sum(n) AS n FROM dbos.queue_rate WHERE partition_key = 'ia-p'")[0]["n"] == 2
    # Another version's row is never admitted here (no worker of that version would use its slot).
    limits(concurrency=5)
    other = rt.client.start(t.timed, 0.0, workflow_id="ia-v", partition_key="p9", app_version="elsewhere")
    assert [b.admitted for b in other.doorbells] == [False]


def test_an_end_says_whether_its_queue_has_rows_waiting(
    rt: Runtime, start_worker: Callable[..., procs.WorkerProc], sql: Sql, limits: Limits
) -> None:
    # The end's UPDATE reports waiting rows (no admission statement after it otherwise); with rows
    # waiting, its freed slot admits the next at once (no sweep runs here: the push is the end's).
    limits(concurrency=1)
    for i in range(3):
        rt.client.start(t.timed, 0.2, workflow_id=f"ew-{i}", partition_key="p1")
    start_worker(name="sbx1", queues="sbxQ", concurrency=2)
    wait_all(rt, *(f"ew-{i}" for i in range(3)), timeout=20)
    spans = intervals(sql, "workflow_uuid LIKE 'ew-%%'", {})
    assert max_overlap(spans) == 1
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(sorted(spans, key=lambda s: s["start"]))]
    assert all(g < 1000 for g in gaps), gaps  # each next one within a second of the slot freeing
