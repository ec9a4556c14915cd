"""Flow-control test helpers (tests/integration/test_admission.py, test_queue_partition_fairness.py,
test_queue_rate_limit.py): exact sbxQ limits, and what the children's steps did.

The children record when their one step held a worker slot (`t.timed`: start, end, worker node), so
overlaps are measured from what ran, not from what the engine believes. Every test sets exact
limits on sbxQ (all fields, so the environment's defaults play no part) and drops them afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kodo.db import limits
from kodo.runtime import Runtime
from tests.support import procs
from tests.support import workflows as t
from tests.support.helpers import Sql

# Every queue-wide limit: a test sets them all, so the environment's defaults play no part.
QUEUE_FIELDS = tuple(f for f in limits.QUEUE_FIELDS if f != "priority")
Limits = Callable[..., None]


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
