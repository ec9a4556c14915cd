"""`GET /metrics` on the admin app: step durations from every worker process (prometheus_client's
multiprocess directory), and the counts Postgres holds at scrape time."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kodo.api.admin import create_admin_app
from kodo.runtime import Runtime
from tests.support import workflows as t
from tests.support.intent import start_run, wait_run

Sql = Callable[..., list[dict[str, Any]]]
Worker = Callable[..., Any]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(rt: Runtime, metrics_dir: Path | None) -> Samples:
    obs = dataclasses.replace(
        rt.settings.observability, metrics_dir=str(metrics_dir) if metrics_dir else None
    )
    admin = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, observability=obs))
    r = create_admin_app(admin).test_client().get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    out: Samples = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def total(samples: Samples, metric: str, **labels: str) -> float:
    """Summed over the labels not given."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and want <= ls)


def test_step_histograms_from_the_worker_processes_and_counts_from_postgres(
    rt: Runtime, sql: Sql, start_worker: Worker, tmp_path: Path, version: str
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    before = scrape(rt, metrics_dir)
    # Two pool processes; the parent and its two sandbox children run in whichever is free.
    start_worker(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, concurrency=2)
    hooks = {"testHooks": {"tests": ["a.ts", "b.ts"], "testCommand": "echo ok"}}
    _, run_id = start_run(rt, sql, "measured", constraints=hooks, approved=True, partition_key="tenant-m")
    wait_run(sql, run_id, "succeeded")

    after = scrape(rt, metrics_dir)
    seconds = "kodo_step_duration_seconds_count"
    for step in ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST"):
        assert value(after, seconds, kind="transaction", name=step, outcome="ok") == 1, step
    executed = value(after, seconds, kind="step", name="IntentWorkflow.executeTask", outcome="ok")
    assert executed == 2  # one per sandbox task, whichever process ran it
    assert len(list(metrics_dir.glob("histogram_*.db"))) >= 1
    bucket = value(
        after,
        "kodo_step_duration_seconds_bucket",
        kind="transaction",
        name="CompileST",
        outcome="ok",
        le="+Inf",
    )
    assert bucket == 1

    # Without the directory, /metrics has only what this process ran itself (nothing here).
    assert total(scrape(rt, None), seconds, name="CompileST") == 0

    # Postgres counts: workflows by status, runs by status.
    assert value(after, "kodo_workflows", queue="intentQ", status="SUCCESS", version=version) == 1
    assert value(after, "kodo_workflows", queue="sbxQ", status="SUCCESS", version=version) == 2
    assert value(after, "kodo_runs", status="succeeded") == value(before, "kodo_runs", status="succeeded") + 1


def test_queue_depth_per_partition_duplicates_and_republishes(
    rt: Runtime, sql: Sql, start_worker: Worker, version: str
) -> None:
    before = scrape(rt, None)
    for q in ("intentQ", "sbxQ", "controlQ"):
        assert ("kodo_queue_depth", frozenset({("queue", q), ("partition", "")})) in before, q

    # Three rows of a version nobody serves wait on sbxQ (inserted without a doorbell, so no worker
    # sees them): two of tenant-a, one of tenant-b.
    waiting = [("tenant-a", "qd-a1"), ("tenant-a", "qd-a2"), ("tenant-b", "qd-b1")]
    with rt.db.tx() as c:
        for partition, wid in waiting:
            rt.client.start_txn(
                c, t.sleeper, (0,), {}, workflow_id=f"{wid}-{version}", queue="sbxQ",
                partition_key=partition, app_version=f"{version}-nobody",
            )  # fmt: skip
    mid = scrape(rt, None)
    depth = "kodo_queue_depth"
    assert (
        value(mid, depth, queue="sbxQ", partition="tenant-a")
        == value(before, depth, queue="sbxQ", partition="tenant-a") + 2
    )
    assert (
        value(mid, depth, queue="sbxQ", partition="tenant-b")
        == value(before, depth, queue="sbxQ", partition="tenant-b") + 1
    )

    # A duplicate delivery of a finished workflow is absorbed (a no-op claim) and counted.
    start_worker()
    done = f"dup-{version}"
    rt.client.start(t.sleeper, 0, workflow_id=done)
    assert rt.client.wait(done, 30)["status"] == "SUCCESS"
    absorbed = "kodo_duplicate_deliveries_absorbed_total"
    base = value(scrape(rt, None), absorbed, queue="intentQ")
    rt.engine.dispatcher.publish(done, "intentQ")
    rt.engine.dispatcher.publish(done, "intentQ")
    _wait(lambda: noop_deliveries(sql, done) == 2)
    assert value(scrape(rt, None), absorbed, queue="intentQ") == base + 2

    # Republishes not yet claimed: a row whose doorbell the reconciler rang again counts until claimed.
    stuck = f"rp-{version}"
    with rt.db.tx() as c:
        rt.client.start_txn(
            c, t.sleeper, (0,), {}, workflow_id=stuck, queue="controlQ", app_version=f"{version}-nobody"
        )
    sql("UPDATE dbos.workflow_status SET publish_count = 3 WHERE workflow_uuid = %s", (stuck,))
    republished = "kodo_republishes"
    assert value(scrape(rt, None), republished, queue="controlQ") >= 3


def test_every_worker_queue_keeps_its_keyless_depth_series_when_only_keyed_rows_wait(
    rt: Runtime, sql: Sql, version: str
) -> None:
    # Earlier tests' leftovers without a key are finished off; one keyed row waits on sbxQ.
    sql(
        "UPDATE dbos.workflow_status SET status = 'CANCELLED' WHERE queue_name = 'sbxQ'"
        " AND queue_partition_key IS NULL AND status IN ('ENQUEUED', 'PENDING')"
    )
    with rt.db.tx() as c:
        rt.client.start_txn(
            c, t.sleeper, (0,), {}, workflow_id=f"keyed-{version}", queue="sbxQ",
            partition_key="tenant-k", app_version=f"{version}-nobody",
        )  # fmt: skip
    samples = scrape(rt, None)
    assert value(samples, "kodo_queue_depth", queue="sbxQ", partition="tenant-k") >= 1
    keyless = ("kodo_queue_depth", frozenset({("queue", "sbxQ"), ("partition", "")}))
    assert samples[keyless] == 0  # present, and 0


def test_recovery_attempts_follow_a_killed_runner(
    rt: Runtime, sql: Sql, start_worker: Worker, version: str
) -> None:
    before = value(scrape(rt, None), "kodo_recovery_attempts", queue="intentQ")
    w = start_worker(faults="step.started@t.tx_effect")  # hangs in the first step, holding the lease
    wid = f"rec-{version}"
    rt.client.start(t.sleeper, 0.1, workflow_id=wid)
    w.wait_fault()
    w.kill9()
    start_worker()
    assert rt.client.wait(wid, 60)["status"] == "SUCCESS"
    [row] = sql("SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = %s", (wid,))
    assert row["recovery_attempts"] == 1
    assert value(scrape(rt, None), "kodo_recovery_attempts", queue="intentQ") == before + 1


def noop_deliveries(sql: Sql, workflow_id: str) -> int:
    [row] = sql("SELECT noop_deliveries FROM dbos.workflow_status WHERE workflow_uuid = %s", (workflow_id,))
    return int(row["noop_deliveries"])


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
