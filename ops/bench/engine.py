"""Engine benchmark: kodo vs DBOS Transact (queue mode) vs raw Celery, on the same Postgres and Redis.

    python -m ops.bench.engine [--count 500] [--latency-samples 200] [--concurrency N] ...

Workload: a workflow of four no-op steps (raw Celery: one task doing four autocommit INSERTs).
For each system: two worker processes; `--count` workflows started as fast as possible (throughput =
count / (last completion - first start)), then `--latency-samples` workflows one at a time (start,
wait for SUCCESS, next) after `--warmup` unmeasured ones. See `ops.bench.common` for the timing method.

Databases: kodo and raw Celery use `kodo_bench` (its `dbos` schema is reset each run; raw Celery writes
`public.bench_raw`); DBOS uses its own `kodo_bench_dbos` (dropped and recreated per DBOS run). Redis:
db 13 (flushed before each system). Workers run as subprocesses in their own process groups and are
killed when the run ends, also on error or Ctrl-C. Logs go to a temporary directory (printed).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery

from kodo.config import Settings
from kodo.db import migrate, pool
from kodo.dispatch import producer_app
from kodo.runtime import Runtime
from ops.bench import raw_celery
from ops.bench.common import (
    REPO,
    Child,
    Children,
    Plan,
    RawProbe,
    Result,
    WorkflowStatusProbe,
    base_env,
    connect,
    db_url,
    log,
    measure_all,
    recreate_database,
    terminate_on_sigterm,
)
from ops.bench.kodo_workflows import four_noops

KODO_DB = "kodo_bench"
DBOS_DB = "kodo_bench_dbos"
BROKER = "redis://127.0.0.1:6379/13"
CELERY = str(Path(sys.executable).with_name("celery"))
HOST = socket.gethostname()


def _plan(args: argparse.Namespace, run: str, samples: int | None = None) -> Plan:
    return Plan(
        run_id=run,
        count=args.count,
        samples=args.latency_samples if samples is None else samples,
        warmup=args.warmup,
        warmup_batch=args.warmup_batch,
        threads=args.threads,
        poll_ms=args.poll_ms,
        timeout_s=args.timeout,
    )


def _flush_broker() -> None:
    redis.Redis.from_url(BROKER).flushdb()


def _wait_pong(app: Any, nodes: list[str], workers: list[Child], timeout_s: float = 60.0) -> None:
    """Wait until every Celery node answers a remote-control ping (its consumer is running)."""
    deadline = time.monotonic() + timeout_s
    missing = set(nodes)
    while missing:
        for child in workers:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout_s}s: {sorted(missing)}")
        for reply in app.control.ping(destination=sorted(missing), timeout=0.5) or []:
            missing -= set(reply)


def _start_celery_workers(
    children: Children, args: argparse.Namespace, *, prefix: str, app: str, queue: str, env: dict[str, str]
) -> list[Child]:
    workers = []
    for i in range(1, args.workers + 1):
        cmd = [
            CELERY,
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            "-c",
            str(args.concurrency),
            "-n",
            f"{prefix}-w{i}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ]
        workers.append(children.spawn(f"{prefix}-w{i}", cmd, env))
    return workers


# ---- kodo -------------------------------------------------------------------------------------------


def run_kodo(args: argparse.Namespace, children: Children, run: str) -> Result:
    env = base_env()
    env.update(
        APP_DB_NAME=KODO_DB,
        KODO_BROKER_URL=BROKER,
        KODO_APP_VERSION=f"bench-{run}",
        KODO_WORKFLOW_MODULES="ops.bench.kodo_workflows",
    )
    settings = Settings.from_env(env)
    log(f"kodo: resetting schema dbos in {KODO_DB}, flushing redis db 13")
    migrate.reset_schema(settings.database_url, "dbos")
    _flush_broker()
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), queue intentQ"
    result = Result(system="kodo", config=config)
    log(f"kodo: starting {config}")
    workers = _start_celery_workers(children, args, prefix="kodo", app="kodo", queue="intentQ", env=env)
    rt = Runtime.build(settings)
    pinger = producer_app(settings)
    try:
        _wait_pong(pinger, [f"kodo-w{i}@{HOST}" for i in range(1, args.workers + 1)], workers)
        log("kodo: workers ready")

        def start(key: str) -> None:
            rt.client.start(four_noops, workflow_id=key)

        with connect(settings.database_url) as conn:
            probe = WorkflowStatusProbe(conn, "claimed (PENDING)")
            measure_all(result, start, probe, _plan(args, run), {w.pgid for w in workers})
            row = conn.execute(
                "SELECT count(*) AS n, sum(noop_deliveries) AS noops, sum(recovery_attempts) AS recoveries,"
                " count(*) FILTER (WHERE noop_deliveries > 0) AS with_noops"
                " FROM dbos.workflow_status WHERE workflow_uuid LIKE %s",
                (f"{run}-%",),
            ).fetchone()
            assert row is not None
            result.notes.append(
                f"{row['n']} workflows: {row['noops']} no-op (duplicate) deliveries on"
                f" {row['with_noops']} rows, {row['recoveries']} recovery attempts"
            )
    finally:
        for w in workers:
            children.stop(w)
        pinger.close()
        pool.close_all()
    return result


# ---- raw Celery --------------------------------------------------------------------------------------


def run_raw(args: argparse.Namespace, children: Children, run: str) -> Result:
    url = db_url(KODO_DB)
    migrate.ensure_database(url)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.bench_raw")
        c.execute(raw_celery.DDL)
    _flush_broker()
    env = base_env()
    env.update(BENCH_BROKER_URL=BROKER, BENCH_RAW_DB_URL=url, BENCH_RAW_CONFIG=args.raw_config)
    settings_name = "Celery defaults" if args.raw_config == "defaults" else "kodo's Celery settings"
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), {settings_name}"
    result = Result(system="raw celery", config=config)
    log(f"raw celery: starting {config}")
    workers = _start_celery_workers(
        children, args, prefix="raw", app="ops.bench.raw_celery", queue=raw_celery.QUEUE, env=env
    )
    producer = Celery("kodo-bench-raw-producer")
    producer.conf.update(raw_celery.make_config(BROKER, args.raw_config))
    try:
        _wait_pong(producer, [f"raw-w{i}@{HOST}" for i in range(1, args.workers + 1)], workers)
        log("raw celery: workers ready")

        def start(key: str) -> None:
            producer.send_task(raw_celery.TASK, args=[key], queue=raw_celery.QUEUE)

        with connect(url) as conn:
            measure_all(result, start, RawProbe(conn), _plan(args, run), {w.pgid for w in workers})
    finally:
        for w in workers:
            children.stop(w)
        producer.close()
    return result


# ---- DBOS --------------------------------------------------------------------------------------------


def run_dbos(args: argparse.Namespace, children: Children, run: str, poll: float) -> Result:
    url = db_url(DBOS_DB)
    log(f"dbos (poll {poll:g}s): recreating database {DBOS_DB}")
    recreate_database(DBOS_DB)
    env = base_env()
    module = [sys.executable, "-m", "ops.bench.dbos_app"]
    wc = args.dbos_worker_concurrency
    workers: list[Child] = []
    try:
        for i in range(1, args.workers + 1):
            # One at a time: the first launch creates the system tables (migrations).
            cmd = [*module, "worker", "--db-url", url, "--executor-id", f"bench-w{i}", "--poll", str(poll)]
            if wc is not None:
                cmd += ["--worker-concurrency", str(wc)]
            w = children.spawn(f"dbos-w{i}", cmd, env)
            w.wait_for_line("DBOS worker ready", 120)
            workers.append(w)
        log(f"dbos (poll {poll:g}s): {len(workers)} workers ready")
        result_file = children.log_dir / f"dbos-{poll:g}.json"
        config = (
            f"{args.workers} DBOS processes (in-process queue runner), polling_interval_sec={poll:g},"
            f" worker_concurrency={wc}"
        )
        plan = _plan(args, run, args.dbos_latency_samples)
        cmd = [
            *module,
            "driver",
            "--db-url",
            url,
            "--result",
            str(result_file),
            "--run-id",
            run,
            "--config",
            config,
            "--poll",
            str(poll),
            "--count",
            str(plan.count),
            "--samples",
            str(plan.samples),
            "--warmup",
            str(plan.warmup),
            "--warmup-batch",
            str(plan.warmup_batch),
            "--threads",
            str(plan.threads),
            "--poll-ms",
            str(plan.poll_ms),
            "--timeout",
            str(plan.timeout_s),
            "--worker-pgids",
            ",".join(str(w.pgid) for w in workers),
        ]
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = driver.wait()
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, 9)
                driver.wait()
        if rc != 0:
            raise RuntimeError(f"DBOS driver failed (exit {rc}); worker logs in {children.log_dir}")
        return Result.from_json(result_file.read_text())
    finally:
        for w in workers:
            children.stop(w)


# ---- report ------------------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: list[Result], args: argparse.Namespace, elapsed: float) -> None:
    line = "=" * 110
    print()
    print(line)
    print(
        f"ENGINE BENCHMARK: {args.count} workflows of 4 no-op steps; one-at-a-time latency over"
        f" {args.latency_samples} samples after {args.warmup} warm-up; {os.cpu_count()} cores;"
        f" Python {platform.python_version()}"
    )
    print(
        "latency  = completion timestamp written by the system (kodo, DBOS: workflow_status.updated_at,"
        " 1 ms resolution;\n           raw celery: ts of the 4th INSERT) minus time.time() taken just"
        " before the start call"
    )
    print(f"observed = first status poll that saw it done (polling every {args.poll_ms:g} ms)")
    print("-" * 110)
    print(
        f"{'system':<18} {'workflows/s':>11} {'median ms':>10} {'p99 ms':>8} {'obs med':>8} {'obs p99':>8}  config"
    )
    for r in results:
        print(
            f"{r.system:<18} {_fmt(r.throughput_wps):>11} {_fmt(r.latency.median, 2):>10}"
            f" {_fmt(r.latency.p99, 2):>8} {_fmt(r.observed.median, 2):>8} {_fmt(r.observed.p99, 2):>8}"
            f"  {r.config}"
        )
    print("-" * 110)
    kodo = next((r for r in results if r.system == "kodo"), None)
    raw = next((r for r in results if r.system == "raw celery"), None)
    if kodo is not None:
        for d in (r for r in results if r.system.startswith("dbos")):
            ratio = kodo.throughput_wps / d.throughput_wps
            print(f"throughput kodo / {d.system:<18} {ratio:6.2f}x   target >= 2.0: {_verdict(ratio >= 2)}")
        if raw is not None:
            ratio = kodo.throughput_wps / raw.throughput_wps
            print(
                f"throughput kodo / {raw.system:<18} {ratio:6.2f}x   target >= 0.5: {_verdict(ratio >= 0.5)}"
            )
        med = kodo.latency.median
        print(f"kodo one-at-a-time median      {_fmt(med, 2):>6} ms  target < 10 ms: {_verdict(med < 10)}")
    print("-" * 110)
    for r in results:
        print(
            f"{r.system}: {r.count} in {_fmt(r.throughput_window_s, 2)} s (starts issued in"
            f" {_fmt(r.start_window_s, 2)} s from {args.threads} threads); latency mean"
            f" {_fmt(r.latency.mean, 2)}, min {_fmt(r.latency.min, 2)}, max {_fmt(r.latency.max, 2)} ms"
        )
        for note in r.notes:
            print(f"    {note}")
        if r.breakdown:
            print("    one-at-a-time latency by segment (median ms, from the rows' own timestamps):")
            for label, ms in r.breakdown:
                print(f"      {label:<46} {ms:8.2f}")
        if r.cpu:
            print("    CPU seconds used during the throughput run, by process group:")
            print("      " + ", ".join(f"{name} {secs:.2f}" for name, secs in r.cpu))
    print(line)
    print(f"total benchmark time {elapsed:.0f} s")


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ops.bench.engine",
        description="Engine benchmark: kodo vs DBOS Transact (queue mode) vs raw Celery.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--count", type=int, default=500, help="workflows started at once for the throughput run")
    p.add_argument("--latency-samples", type=int, default=200, help="one-at-a-time samples (after --warmup)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured one-at-a-time runs before the samples")
    p.add_argument("--warmup-batch", type=int, default=50, help="workflows run concurrently before measuring")
    p.add_argument("--workers", type=int, default=2, help="worker processes per system")
    p.add_argument("--concurrency", type=int, default=2, help="celery -c of each kodo and raw worker")
    p.add_argument("--threads", type=int, default=4, help="threads issuing the starts in the throughput run")
    p.add_argument("--poll-ms", type=float, default=1.0, help="status polling interval of the latency loop")
    p.add_argument("--timeout", type=float, default=300.0, help="give up a throughput run after this many s")
    p.add_argument("--skip-kodo", action="store_true")
    p.add_argument("--skip-dbos", action="store_true")
    p.add_argument("--skip-raw", action="store_true")
    p.add_argument(
        "--dbos-poll",
        default="1.0",
        help="comma list of DBOS queue polling_interval_sec values, one DBOS run each (DBOS default 1.0)",
    )
    p.add_argument(
        "--dbos-worker-concurrency",
        type=int,
        default=None,
        help="DBOS queue worker_concurrency per process (default: unset, as in DBOS)",
    )
    p.add_argument(
        "--dbos-latency-samples",
        type=int,
        default=None,
        help="one-at-a-time samples for DBOS (default: --latency-samples)",
    )
    p.add_argument(
        "--raw-config",
        choices=["defaults", "kodo"],
        default="defaults",
        help="raw Celery settings: Celery's defaults, or kodo's (acks_late, prefetch 1, events)",
    )
    p.add_argument("--log-dir", default=None, help="worker logs (default: a new temporary directory)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="kodo-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = f"b{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log(f"run {run}: logs in {log_dir}")
    children = Children(log_dir)
    results: list[Result] = []
    began = time.monotonic()
    try:
        with terminate_on_sigterm():
            if not args.skip_kodo:
                results.append(run_kodo(args, children, run))
            if not args.skip_raw:
                results.append(run_raw(args, children, run))
            if not args.skip_dbos:
                for poll in (float(x) for x in args.dbos_poll.split(",") if x.strip()):
                    results.append(run_dbos(args, children, run, poll))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        children.stop_all()
    report(results, args, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
