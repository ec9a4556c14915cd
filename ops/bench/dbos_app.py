"""The DBOS Transact side of the engine benchmark, run in subprocesses of `ops.bench.engine`.

    python -m ops.bench.dbos_app worker --db-url URL --executor-id ID [--poll S] [--worker-concurrency N]
    python -m ops.bench.dbos_app driver --db-url URL --result FILE ...

A worker is a launched DBOS application (in-process queue runner) listening to the queue `benchq`,
which holds the workflow `bench_four_noops`: four no-op `@DBOS.step()`s. The driver is a
`DBOSClient` (no workflow code, like kodo's client in the API process): it enqueues, measures with the
same loops as kodo and raw Celery (`ops.bench.measure`) and writes a JSON `Result`.

DBOS must never share a database with kodo: both own a schema named `dbos`.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient

from ops.bench.measure import Plan, measure_all
from ops.bench.probes import WorkflowStatusProbe
from ops.bench.services import Conn, connect
from ops.bench.stats import Result

APP_NAME = "kodo-bench"
QUEUE = "benchq"
WORKFLOW = "bench_four_noops"


def run_worker(args: argparse.Namespace) -> int:
    DBOS(
        config={
            "name": APP_NAME,
            "system_database_url": args.db_url,
            "executor_id": args.executor_id,
            "log_level": "WARNING",
        }
    )

    @DBOS.step(name="bench_noop")
    def noop(i: int) -> int:
        return i

    @DBOS.workflow(name=WORKFLOW)
    def four_noops() -> int:
        total = 0
        for i in range(4):
            total += noop(i)
        return total

    stop = threading.Event()

    def on_term(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        polling_interval_sec=args.poll,
        worker_concurrency=args.worker_concurrency,
        on_conflict="always_update",
    )
    deadline = time.monotonic() + 30
    while not any(t.name == f"queue-worker-{QUEUE}" for t in threading.enumerate()):
        if time.monotonic() > deadline:
            print("queue worker thread did not start", flush=True)
            return 1
        time.sleep(0.05)
    print(f"DBOS worker ready (executor {args.executor_id}, pid {os.getpid()})", flush=True)
    stop.wait()
    DBOS.destroy(destroy_registry=True)
    return 0


def run_driver(args: argparse.Namespace) -> int:
    client = DBOSClient(system_database_url=args.db_url, application_name=APP_NAME)

    def start(key: str) -> None:
        client.enqueue({"workflow_name": WORKFLOW, "queue_name": QUEUE, "workflow_id": key})

    result = Result(system=f"dbos (poll {args.poll:g}s)", config=args.config)
    plan = Plan.from_args(args, args.run_id, args.samples)
    try:
        with connect(args.db_url) as conn:
            probe = WorkflowStatusProbe(conn, "dequeued (PENDING)")
            measure_all(result, start, probe, plan, {int(p) for p in args.worker_pgids.split(",") if p})
            result.notes.append(_recovery_note(conn, args.run_id))
    finally:
        client.destroy()
    Path(args.result).write_text(result.to_json())
    return 0


def _recovery_note(conn: Conn, run_id: str) -> str:
    row = conn.execute(
        "SELECT count(*) AS n, sum(recovery_attempts) AS attempts FROM dbos.workflow_status"
        " WHERE workflow_uuid LIKE %s",
        (f"{run_id}-%",),
    ).fetchone()
    assert row is not None
    return f"{row['n']} workflows, {row['attempts']} dispatches counted in recovery_attempts"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench.dbos_app", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--db-url", required=True)
    w.add_argument("--executor-id", required=True)
    w.add_argument("--poll", type=float, default=1.0, help="queue polling_interval_sec (DBOS default 1.0)")
    w.add_argument("--worker-concurrency", type=int, default=None)
    d = sub.add_parser("driver")
    d.add_argument("--db-url", required=True)
    d.add_argument("--result", required=True)
    d.add_argument("--run-id", required=True)
    d.add_argument("--config", default="")
    d.add_argument("--poll", type=float, required=True, help="the workers' polling interval (for the label)")
    d.add_argument("--count", type=int, default=500)
    d.add_argument("--samples", type=int, default=200)
    d.add_argument("--warmup", type=int, default=20)
    d.add_argument("--warmup-batch", type=int, default=50)
    d.add_argument("--threads", type=int, default=4)
    d.add_argument("--poll-ms", type=float, default=1.0)
    d.add_argument("--timeout", type=float, default=300.0)
    d.add_argument("--rounds", type=int, default=3)
    d.add_argument("--worker-pgids", default="")
    args = p.parse_args(argv)
    return run_worker(args) if args.cmd == "worker" else run_driver(args)


if __name__ == "__main__":
    raise SystemExit(main())
