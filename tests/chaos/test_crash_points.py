"""Invariant 2 (kill -9 anywhere, lose nothing), with real worker processes killed by SIGKILL.

The crash demo (step 1 marks s1, durable sleep, step 2 marks s2) is killed at each interesting point:
during the durable sleep, inside step 1 or step 2 (before its function ran), and right after step 1's
or step 2's checkpoint committed. The whole worker (main process and pool children) is killed with
kill -9, a fresh worker without the fault is started, and the run must end SUCCESS with exactly
s1=1, s2=1, exactly three recorded operations (mark, sleep, mark), checkpoints written before the kill
untouched, and the run resumed promptly: the workers here hold 30 s leases, so resuming within
seconds proves the takeover did not wait for the dead worker's lease to run out (nor for Redis'
one-hour visibility timeout); the reconciler of the fresh worker saw that the holder's process is dead.

`app.marks` has a primary key, so `{s1:1, s2:1}` alone would also hold if a completed step ran again.
Each test therefore runs a twin (`t.crash_twin`, same shape) beside the demo, killed at the same
instant, whose steps count every execution: `n = 1` proves completed steps were not re-run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kodo.demo.crashdemo import crash_demo
from kodo.runtime import Runtime
from ops import processes
from tests.conftest import effects_of
from tests.support import procs
from tests.support import workflows as t

pytestmark = pytest.mark.chaos

Sql = Callable[..., list[dict[str, Any]]]
StartWorker = Callable[..., procs.WorkerProc]

SLEEP_MS = 1500
MARK = "crashdemo.mark"
TWIN_STEP = "t.tx_effect"
DEMO_OPS = [MARK, "kodo.sleep", MARK]
TWIN_OPS = [TWIN_STEP, "kodo.sleep", TWIN_STEP]
LEASE_MS = 30_000
# Once the fresh worker is up, the run must resume within this (in practice ~0.1-0.5 s).
MAX_RESUME_S = 3.0
# Kill -> next step, including the fresh worker's start-up (~1.5 s on an idle machine, more on a
# loaded one). Far below the ~22 s a wait for the dead worker's 30 s lease would take.
MAX_RECOVERY_S = 15.0


@dataclass(frozen=True)
class KillPoint:
    id: str
    fault: str | None  # armed fault point; None = kill during the durable sleep
    step: int  # the step (1 or 2) whose fault point is armed
    ops_before: int  # operations recorded when the worker dies
    marks_before: dict[str, int]
    lease_held: bool  # the killed worker held the run's lease (so the takeover is a recovery)


POINTS = [
    KillPoint("during-sleep", None, 0, 2, {"s1": 1}, lease_held=False),
    KillPoint("inside-step-1", "step.started", 1, 0, {}, lease_held=True),
    KillPoint("inside-step-2", "step.started", 2, 2, {"s1": 1}, lease_held=True),
    KillPoint("after-commit-1", "step.committed", 1, 1, {"s1": 1}, lease_held=True),
    KillPoint("after-commit-2", "step.committed", 2, 3, {"s1": 1, "s2": 1}, lease_held=True),
]


@pytest.fixture
def worker_env(version: str) -> dict[str, str]:
    """Long leases: a recovery within seconds cannot come from the lease running out."""
    return {**os.environ, "KODO_LEASE_MS": str(LEASE_MS)}


def marks_of(sql: Sql, wid: str) -> dict[str, int]:
    rows = sql("SELECT step, count(*) AS n FROM app.marks WHERE run_id = %s GROUP BY step", (wid,))
    return {r["step"]: int(r["n"]) for r in rows}


def ops_of(sql: Sql, wid: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT function_id, function_name, output, started_at_epoch_ms, completed_at_epoch_ms "
        "FROM dbos.operation_outputs WHERE workflow_uuid = %s ORDER BY function_id",
        (wid,),
    )


def row_of(sql: Sql, wid: str) -> dict[str, Any]:
    rows = sql(
        "SELECT status, wait_reason, executor_id, recovery_attempts, updated_at "
        "FROM dbos.workflow_status WHERE workflow_uuid = %s",
        (wid,),
    )
    assert len(rows) == 1, rows
    return rows[0]


def wait_sleeping(sql: Sql, *wids: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = sql(
            "SELECT workflow_uuid, wait_reason FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
            (list(wids),),
        )
        if len(rows) == len(wids) and all(r["wait_reason"] == "sleep" for r in rows):
            return
        assert time.monotonic() < deadline, f"not all in their durable sleep: {rows}"
        time.sleep(0.02)


def resumed(ops: list[dict[str, Any]], row: dict[str, Any], kill_ms: int) -> tuple[int, int]:
    """(when the run resumed, since when it was due) after a kill at `kill_ms`, in epoch ms.

    It resumed when the first operation after the kill started (or, with nothing left to run, when it
    completed). It was due at the kill, or at the sleep's wake_at if the kill landed in the sleep.
    """
    for i, op in enumerate(ops):
        if int(op["started_at_epoch_ms"]) >= kill_ms:
            since = kill_ms
            if i > 0 and ops[i - 1]["function_name"] == "kodo.sleep":
                since = max(since, int(json.loads(ops[i - 1]["output"])["wake_at"]))
            return int(op["started_at_epoch_ms"]), since
    return int(row["updated_at"]), kill_ms


def assert_dead(w: procs.WorkerProc, fault_pids: list[int]) -> None:
    assert w.proc.poll() is not None, "the worker's main process survived kill -9"
    assert w.live_pids() == [], f"processes of the killed worker still run: {w.live_pids()}"
    for pid in fault_pids:
        assert not processes.pid_alive(pid), f"the pool child {pid} hanging at the fault point survived"


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_kill9_anywhere_then_restart_loses_and_repeats_nothing(
    point: KillPoint, rt: Runtime, start_worker: StartWorker, sql: Sql
) -> None:
    wid = f"crash-{point.id}-{uuid.uuid4().hex[:8]}"
    twin = f"{wid}-twin"
    faults = f"{point.fault}@{MARK},{point.fault}@{TWIN_STEP}" if point.fault else None

    # Step 1's fault fires on the first attempt; to stop inside/after step 2 instead, a worker
    # without the fault runs step 1 into the sleep and dies there, and the armed worker takes over.
    victim = start_worker(name="victim", faults=faults if point.step == 1 else None)
    rt.client.start(crash_demo, SLEEP_MS, workflow_id=wid)
    rt.client.start(t.crash_twin, SLEEP_MS, workflow_id=twin)
    if point.step == 2:
        wait_sleeping(sql, wid, twin)
        victim.kill9()  # a sleeping workflow holds no worker: nothing of it dies here
        victim = start_worker(name="victim2", faults=faults)
    if point.fault is None:
        wait_sleeping(sql, wid, twin)
    else:
        victim.wait_fault(count=2)  # both runs hang at the armed point, one per pool child

    # The state at the kill is exactly the kill point's.
    before = {w: ops_of(sql, w) for w in (wid, twin)}
    assert [o["function_name"] for o in before[wid]] == DEMO_OPS[: point.ops_before]
    assert [o["function_name"] for o in before[twin]] == TWIN_OPS[: point.ops_before]
    assert marks_of(sql, wid) == point.marks_before
    assert effects_of(sql, twin) == point.marks_before
    for w in (wid, twin):
        at_kill = row_of(sql, w)
        assert at_kill["status"] == "PENDING"
        assert (at_kill["executor_id"] is not None) == point.lease_held

    fault_pids = victim.fault_pids()
    kill_ms = processes.now_ms()
    victim.kill9()
    assert_dead(victim, fault_pids)

    start_worker(name="rescuer")
    ready_ms = processes.now_ms()
    for w, expected_ops in ((wid, DEMO_OPS), (twin, TWIN_OPS)):
        final = rt.client.wait(w, 30)
        assert final["status"] == "SUCCESS", final
        ops = ops_of(sql, w)
        assert [o["function_name"] for o in ops] == expected_ops
        assert [o["function_id"] for o in ops] == [1, 2, 3]
        # Checkpoints written before the kill stand as written (not re-run, not rewritten).
        assert ops[: point.ops_before] == before[w]
        # Exactly the kill points with a held lease needed a takeover (a counted recovery attempt).
        assert row_of(sql, w)["recovery_attempts"] == (1 if point.lease_held else 0)
        at, due = resumed(ops, row_of(sql, w), kill_ms)
        recovery_s, resume_s = (at - due) / 1000, (at - max(due, ready_ms)) / 1000
        print(
            f"{point.id} {w}: recovery {recovery_s:.2f}s (fresh worker up after {(ready_ms - kill_ms) / 1000:.2f}s)"
        )
        assert resume_s < MAX_RESUME_S, f"{w} resumed {resume_s:.2f}s after the fresh worker was up"
        assert 0 <= recovery_s < MAX_RECOVERY_S, f"{w} took {recovery_s:.2f}s to recover"
    assert rt.client.get(wid)["output"] == json.dumps({"ok": True, "workflowId": wid}, separators=(",", ":"))
    assert marks_of(sql, wid) == {"s1": 1, "s2": 1}
    assert effects_of(sql, twin) == {"s1": 1, "s2": 1}  # each step's transaction ran exactly once
