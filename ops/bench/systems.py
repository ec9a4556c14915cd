"""The three systems under test: each one's workers started, measured by `ops.bench.measure`, stopped.

Every system gets `--workers` worker processes in their own process groups (`ops.processes`), started
for its measurement and stopped right after it (also on error or Ctrl-C). kodo and raw Celery use the
database `kodo_bench` (kodo's `dbos` schema is reset each run; raw Celery writes `public.bench_raw`) and
the broker db `--redis-db`, flushed first; DBOS uses its own `kodo_bench_dbos` (recreated per run) and
measures itself in a driver subprocess (`ops.bench.dbos_app driver`), whose `Result` comes back as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
from typing import Any

import psycopg
from celery import Celery

from kodo.config import Settings
from kodo.db import migrate, pool
from kodo.dispatch import producer_app
from kodo.runtime import Runtime
from ops import processes
from ops.bench import BenchError, log, raw_celery
from ops.bench.kodo_profile import close_runtime, profile_engine
from ops.bench.kodo_workflows import four_noops
from ops.bench.measure import Plan, measure_all
from ops.bench.probes import RawProbe, WorkflowStatusProbe
from ops.bench.services import (
    base_env,
    broker_drain,
    broker_url,
    connect,
    db_url,
    prepare_broker,
    recreate_database,
)
from ops.bench.stats import Result
from ops.processes import Proc, Supervisor
from ops.procfile import celery_worker_argv

KODO_DB = "kodo_bench"
DBOS_DB = "kodo_bench_dbos"
HOST = socket.gethostname()


def _plan(args: argparse.Namespace, run: str, samples: int | None = None) -> Plan:
    return Plan.from_args(args, run, args.latency_samples if samples is None else samples)


def _start_celery_workers(
    sup: Supervisor,
    args: argparse.Namespace,
    pinger: Any,
    *,
    prefix: str,
    app: str,
    queue: str,
    env: dict[str, str],
) -> list[Proc]:
    """`--workers` Celery workers `<prefix>-wN` of `app` on `queue`; returns once every one answers a
    remote-control ping (its consumer runs)."""
    nodes = [f"{prefix}-w{i}" for i in range(1, args.workers + 1)]
    workers = [
        sup.spawn(
            node, celery_worker_argv(queue, args.concurrency, f"{node}@%h", app=app, loglevel="WARNING"), env
        )
        for node in nodes
    ]
    missing = {f"{node}@{HOST}" for node in nodes}

    def answered() -> bool:
        for w in workers:
            w.ensure_running()
        for reply in pinger.control.ping(destination=sorted(missing), timeout=0.5) or []:
            missing.difference_update(reply)
        return not missing

    processes.wait_until(
        f"{prefix} workers ready", answered, 60.0, 0, lambda: f"no ping reply from {sorted(missing)}"
    )
    log(f"{prefix}: workers ready")
    return workers


def kodo_env(redis_db: int, run: str, extra: list[str]) -> dict[str, str]:
    """The environment of a kodo run's workers and client; `extra` is KEY=VALUE items."""
    env = base_env()
    env.update(
        APP_DB_NAME=KODO_DB,
        KODO_BROKER_URL=broker_url(redis_db),
        KODO_APP_VERSION=f"bench-{run}",
        KODO_WORKFLOW_MODULES="ops.bench.kodo_workflows",
    )
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def run_kodo(args: argparse.Namespace, sup: Supervisor, run: str) -> Result:
    env = kodo_env(args.redis_db, run, args.kodo_env)
    settings = Settings.from_env(env)
    log(f"kodo: resetting schema dbos in {KODO_DB}, flushing redis db {args.redis_db}")
    migrate.reset_schema(settings.database_url, "dbos")
    prepare_broker(args.redis_db, args.allow_shared_broker)
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), queue intentQ"
    if args.kodo_env:
        config += " with " + " ".join(args.kodo_env)
    result = Result(system="kodo", config=config)
    log(f"kodo: starting {config}")
    rt = Runtime.build(settings)
    pinger = producer_app(settings)
    workers: list[Proc] = []
    try:
        workers = _start_celery_workers(
            sup, args, pinger, prefix="kodo", app="kodo", queue="intentQ", env=env
        )

        def start(key: str) -> None:
            rt.client.start(four_noops, workflow_id=key)

        with connect(settings.database_url) as conn:
            probe = WorkflowStatusProbe(conn, "claimed (PENDING)")
            drain = broker_drain(broker_url(args.redis_db), "intentQ")
            measure_all(result, start, probe, _plan(args, run), {w.pgid for w in workers}, drain)
            row = conn.execute(
                "SELECT count(*) AS n, sum(noop_deliveries) AS noops, sum(recovery_attempts) AS recoveries,"
                " count(*) FILTER (WHERE published_at_epoch_ms > created_at) AS republished"
                " FROM dbos.workflow_status WHERE workflow_uuid LIKE %s",
                (f"{run}-%",),
            ).fetchone()
            assert row is not None
            result.notes.append(
                f"{row['n']} workflows run: {row['noops']} no-op (duplicate) deliveries, {row['recoveries']}"
                f" recovery attempts, {row['republished']} republished by the reconciler (message lost or late)"
            )
    finally:
        sup.stop(*workers)
        pinger.close()
        close_runtime(rt)
    try:
        if args.profile:
            log("kodo: in-process engine profile (workers stopped)")
            profile_settings = dataclasses.replace(settings, app_version=f"bench-{run}-profile")
            result.notes.extend(profile_engine(profile_settings, args.profile_count))
    finally:
        pool.close_all()
    return result


def run_raw(args: argparse.Namespace, sup: Supervisor, run: str) -> Result:
    url = db_url(KODO_DB)
    migrate.ensure_database(url)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.bench_raw")
        c.execute(raw_celery.DDL)
    prepare_broker(args.redis_db, args.allow_shared_broker)
    broker = broker_url(args.redis_db)
    env = base_env()
    env.update(BENCH_BROKER_URL=broker, BENCH_RAW_DB_URL=url, BENCH_RAW_CONFIG=args.raw_config)
    settings_name = "Celery defaults" if args.raw_config == "defaults" else "kodo's Celery settings"
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), {settings_name}"
    result = Result(system="raw celery", config=config)
    log(f"raw celery: starting {config}")
    producer = Celery("kodo-bench-raw-producer")
    producer.conf.update(raw_celery.make_config(broker, args.raw_config))
    workers: list[Proc] = []
    try:
        workers = _start_celery_workers(
            sup, args, producer, prefix="raw", app="ops.bench.raw_celery", queue=raw_celery.QUEUE, env=env
        )

        def start(key: str) -> None:
            producer.send_task(raw_celery.TASK, args=[key], queue=raw_celery.QUEUE)

        with connect(url) as conn:
            drain = broker_drain(broker, raw_celery.QUEUE)
            measure_all(result, start, RawProbe(conn), _plan(args, run), {w.pgid for w in workers}, drain)
    finally:
        sup.stop(*workers)
        producer.close()
    return result


def run_dbos(args: argparse.Namespace, sup: Supervisor, run: str, poll: float) -> Result:
    url = db_url(DBOS_DB)
    log(f"dbos (poll {poll:g}s): recreating database {DBOS_DB}")
    recreate_database(DBOS_DB)
    env = base_env()
    module = [sys.executable, "-m", "ops.bench.dbos_app"]
    wc = args.dbos_worker_concurrency
    workers: list[Proc] = []
    try:
        for i in range(1, args.workers + 1):
            # One at a time: the first launch creates the system tables (migrations).
            cmd = [*module, "worker", "--db-url", url, "--executor-id", f"bench-w{i}", "--poll", str(poll)]
            if wc is not None:
                cmd += ["--worker-concurrency", str(wc)]
            workers.append(sup.spawn(f"dbos-w{i}", cmd, env))
            workers[-1].wait_log("DBOS worker ready", 120)
        log(f"dbos (poll {poll:g}s): {len(workers)} workers ready")
        result_file = sup.log_dir / f"dbos-{poll:g}.json"
        config = (
            f"{args.workers} DBOS processes (in-process queue runner), polling_interval_sec={poll:g},"
            f" worker_concurrency={wc}"
        )
        plan = _plan(args, run, args.dbos_latency_samples)
        options: dict[str, object] = {
            "--db-url": url,
            "--result": result_file,
            "--run-id": run,
            "--config": config,
            "--poll": poll,
            "--count": plan.count,
            "--rounds": plan.rounds,
            "--samples": plan.samples,
            "--warmup": plan.warmup,
            "--warmup-batch": plan.warmup_batch,
            "--threads": plan.threads,
            "--poll-ms": plan.poll_ms,
            "--timeout": plan.timeout_s,
            "--worker-pgids": ",".join(str(w.pgid) for w in workers),
        }
        cmd = [*module, "driver", *(arg for opt, value in options.items() for arg in (opt, str(value)))]
        rc = processes.run_foreground("dbos-driver", cmd, env)
        if rc != 0:
            raise BenchError(f"DBOS driver failed (exit {rc}); worker logs in {sup.log_dir}")
        return Result.from_json(result_file.read_text())
    finally:
        sup.stop(*workers)


def sweep(args: argparse.Namespace, sup: Supervisor, run: str) -> list[tuple[int, Result]]:
    """Throughput only (no latency run, no profile) of kodo and raw Celery at each `--sweep` -c value."""
    rows: list[tuple[int, Result]] = []
    args.latency_samples = 0
    args.profile = False
    for c in (int(x) for x in args.sweep.split(",") if x.strip()):
        args.concurrency = c
        if not args.skip_kodo:
            rows.append((c, run_kodo(args, sup, f"{run}c{c}")))
        if not args.skip_raw:
            rows.append((c, run_raw(args, sup, f"{run}c{c}")))
    return rows
