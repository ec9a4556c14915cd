"""Engine benchmark: kodo vs DBOS Transact (queue mode) vs raw Celery, on the same Postgres and Redis.

    python -m ops.bench.engine [--count 500] [--latency-samples 200] [--concurrency N] ...

Workload: a workflow of four no-op steps (raw Celery: one task doing four autocommit INSERTs).
For each system: two worker processes; `--rounds` times `--count` workflows started as fast as possible
(throughput = count / (last completion - first start), median of the rounds), then `--latency-samples`
workflows one at a time (start, wait for SUCCESS, next) after `--warmup` unmeasured ones. The timing
method is described in `ops.bench.common`.

Databases: kodo and raw Celery use `kodo_bench` (its `dbos` schema is reset each run; raw Celery writes
`public.bench_raw`); DBOS uses its own `kodo_bench_dbos` (dropped and recreated per DBOS run). Redis:
db `--redis-db` (13), flushed before each Celery system; the run refuses to start if another client is
connected to that db (its workers would take our messages). Workers run as subprocesses in their own
process groups and are killed when the run ends, also on error or Ctrl-C. Logs go to a temporary
directory (printed).
"""

from __future__ import annotations

import argparse
import dataclasses
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

import kombu.pools
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
    BenchError,
    Child,
    Children,
    Plan,
    RawProbe,
    Result,
    WorkflowStatusProbe,
    base_env,
    broker_drain,
    connect,
    db_url,
    log,
    measure_all,
    own_tcp_ports,
    recreate_database,
    terminate_on_sigterm,
)
from ops.bench.kodo_profile import close_runtime, profile_engine
from ops.bench.kodo_workflows import four_noops

KODO_DB = "kodo_bench"
DBOS_DB = "kodo_bench_dbos"
CELERY = str(Path(sys.executable).with_name("celery"))
HOST = socket.gethostname()


def _broker(args: argparse.Namespace) -> str:
    return f"redis://127.0.0.1:6379/{args.redis_db}"


def _plan(args: argparse.Namespace, run: str, samples: int | None = None) -> Plan:
    return Plan.from_args(args, run, args.latency_samples if samples is None else samples)


def _prepare_broker(args: argparse.Namespace) -> None:
    """Refuse a broker db that other clients use (their workers would consume our messages); flush it."""
    kombu.pools.reset()  # type: ignore[no-untyped-call]  # close this process's idle broker connections from earlier phases
    admin = redis.Redis(host="127.0.0.1", port=6379, db=0)
    clients = [c for c in admin.client_list() if str(c.get("db")) == str(args.redis_db)]
    admin.close()
    mine = own_tcp_ports()
    others = [c for c in clients if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) not in mine]
    if others and not args.allow_shared_broker:
        raise BenchError(
            f"{len(others)} other client(s) are connected to redis db {args.redis_db} (e.g. "
            f"{others[0].get('addr')} running {others[0].get('cmd')}): pick a free db with --redis-db, "
            "or pass --allow-shared-broker"
        )
    redis.Redis.from_url(_broker(args)).flushdb()


def _wait_pong(app: Any, nodes: list[str], workers: list[Child], timeout_s: float = 60.0) -> None:
    """Wait until every Celery node answers a remote-control ping (its consumer is running)."""
    deadline = time.monotonic() + timeout_s
    missing = set(nodes)
    while missing:
        for child in workers:
            if not child.alive():
                raise BenchError(f"{child.name} exited {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"workers not ready after {timeout_s}s: {sorted(missing)}")
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
        ]
        cmd += ["--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
        workers.append(children.spawn(f"{prefix}-w{i}", cmd, env))
    return workers


# ---- kodo -------------------------------------------------------------------------------------------


def run_kodo(args: argparse.Namespace, children: Children, run: str) -> Result:
    env = base_env()
    env.update(
        APP_DB_NAME=KODO_DB,
        KODO_BROKER_URL=_broker(args),
        KODO_APP_VERSION=f"bench-{run}",
        KODO_WORKFLOW_MODULES="ops.bench.kodo_workflows",
    )
    for item in args.kodo_env:
        key, _, value = item.partition("=")
        env[key] = value
    settings = Settings.from_env(env)
    log(f"kodo: resetting schema dbos in {KODO_DB}, flushing redis db {args.redis_db}")
    migrate.reset_schema(settings.database_url, "dbos")
    _prepare_broker(args)
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), queue intentQ"
    if args.kodo_env:
        config += " with " + " ".join(args.kodo_env)
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
            drain = broker_drain(_broker(args), "intentQ")
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
        for w in workers:
            children.stop(w)
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


# ---- raw Celery --------------------------------------------------------------------------------------


def run_raw(args: argparse.Namespace, children: Children, run: str) -> Result:
    url = db_url(KODO_DB)
    migrate.ensure_database(url)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.bench_raw")
        c.execute(raw_celery.DDL)
    _prepare_broker(args)
    env = base_env()
    env.update(BENCH_BROKER_URL=_broker(args), BENCH_RAW_DB_URL=url, BENCH_RAW_CONFIG=args.raw_config)
    settings_name = "Celery defaults" if args.raw_config == "defaults" else "kodo's Celery settings"
    config = f"{args.workers} celery workers x -c {args.concurrency} (prefork), {settings_name}"
    result = Result(system="raw celery", config=config)
    log(f"raw celery: starting {config}")
    workers = _start_celery_workers(
        children, args, prefix="raw", app="ops.bench.raw_celery", queue=raw_celery.QUEUE, env=env
    )
    producer = Celery("kodo-bench-raw-producer")
    producer.conf.update(raw_celery.make_config(_broker(args), args.raw_config))
    try:
        _wait_pong(producer, [f"raw-w{i}@{HOST}" for i in range(1, args.workers + 1)], workers)
        log("raw celery: workers ready")

        def start(key: str) -> None:
            producer.send_task(raw_celery.TASK, args=[key], queue=raw_celery.QUEUE)

        with connect(url) as conn:
            drain = broker_drain(_broker(args), raw_celery.QUEUE)
            measure_all(result, start, RawProbe(conn), _plan(args, run), {w.pgid for w in workers}, drain)
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
        cmd = [*module, "driver", "--db-url", url, "--result", str(result_file), "--run-id", run]
        cmd += [
            "--config",
            config,
            "--poll",
            str(poll),
            "--count",
            str(plan.count),
            "--rounds",
            str(plan.rounds),
        ]
        cmd += [
            "--samples",
            str(plan.samples),
            "--warmup",
            str(plan.warmup),
            "--warmup-batch",
            str(plan.warmup_batch),
        ]
        cmd += [
            "--threads",
            str(plan.threads),
            "--poll-ms",
            str(plan.poll_ms),
            "--timeout",
            str(plan.timeout_s),
        ]
        cmd += ["--worker-pgids", ",".join(str(w.pgid) for w in workers)]
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = driver.wait()
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, 9)
                driver.wait()
        if rc != 0:
            raise BenchError(f"DBOS driver failed (exit {rc}); worker logs in {children.log_dir}")
        return Result.from_json(result_file.read_text())
    finally:
        for w in workers:
            children.stop(w)


# ---- report ------------------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 1, unit: str = "") -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}{unit}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _cpu_per_workflow(r: Result) -> float:
    """CPU ms per workflow of the processes doing the work (not "other", which is other users' load)."""
    if not r.cpu_workflows:
        return math.nan
    used = sum(secs for name, secs in r.cpu if name != "other" and not name.startswith("("))
    return used / r.cpu_workflows * 1000


def _steal_pct(r: Result) -> float:
    """Share of the machine's CPU time the hypervisor gave to someone else during the throughput rounds."""
    d = dict(r.cpu)
    if "(steal)" not in d or not d.get("(wall clock)"):
        return math.nan
    return 100 * d["(steal)"] / (d["(wall clock)"] * (os.cpu_count() or 1))


def _noisy(*results: Result) -> str:
    """A warning when the hypervisor took >10% of the CPU during a compared throughput run."""
    bad = [f"{r.system} {_steal_pct(r):.0f}%" for r in results if _steal_pct(r) > 10]
    return f"  (unreliable: hypervisor steal {', '.join(bad)})" if bad else ""


def report(results: list[Result], args: argparse.Namespace, elapsed: float) -> None:
    line = "=" * 112
    print()
    print(line)
    print(
        f"ENGINE BENCHMARK: {args.count} workflows of 4 no-op steps x {args.rounds} rounds (median round shown);"
        f" {os.cpu_count()} cores; Python {platform.python_version()}"
    )
    print(
        "latency  = one at a time: completion timestamp written by the system (kodo, DBOS:"
        " workflow_status.updated_at, 1 ms\n           resolution; raw celery: ts of the 4th INSERT)"
        " minus time.time() taken just before the start call"
    )
    print(f"observed = first status poll that saw it done (polling every {args.poll_ms:g} ms)")
    print(
        "cpu/wf   = CPU ms per workflow in the throughput rounds (workers + benchmark driver + postgres + redis);"
        " on 2 cores\n           throughput cannot exceed ~2000 / cpu/wf workflows/s;"
        " steal = CPU time the hypervisor took away meanwhile (noise)"
    )
    print("-" * 112)
    print(
        f"{'system':<18} {'workflows/s':>11} {'median ms':>10} {'p99 ms':>8} {'obs med':>8} {'obs p99':>8}"
        f" {'n':>4} {'cpu/wf':>7} {'steal':>6}  config"
    )
    for r in results:
        print(
            f"{r.system:<18} {_fmt(r.throughput_wps):>11} {_fmt(r.latency.median, 2):>10}"
            f" {_fmt(r.latency.p99, 2):>8} {_fmt(r.observed.median, 2):>8} {_fmt(r.observed.p99, 2):>8}"
            f" {r.latency.n:>4} {_fmt(_cpu_per_workflow(r), 2):>7} {_fmt(_steal_pct(r), 0, '%'):>6}  {r.config}"
        )
    print("-" * 112)
    kodo = next((r for r in results if r.system == "kodo"), None)
    raw = next((r for r in results if r.system == "raw celery"), None)
    if kodo is not None:
        for other, target in [*((r, 2.0) for r in results if r.system.startswith("dbos")), (raw, 0.5)]:
            if other is None:
                continue
            ratio = kodo.throughput_wps / other.throughput_wps
            print(
                f"throughput kodo / {other.system:<18} {ratio:6.2f}x   target >= {target}:"
                f" {_verdict(ratio >= target)}{_noisy(kodo, other)}"
            )
        med = kodo.latency.median
        warn = "" if not kodo.latency_steal_pct > 10 else f"  (noisy: steal {kodo.latency_steal_pct:.0f}%)"
        print(
            f"kodo one-at-a-time median      {_fmt(med, 2):>6} ms  target < 10 ms: {_verdict(med < 10)}{warn}"
        )
    print("-" * 112)
    for r in results:
        rounds = ", ".join(f"{x:.1f}" for x in r.throughput_rounds)
        print(
            f"{r.system}: rounds {rounds} workflows/s; median round {r.count} in {_fmt(r.throughput_window_s, 2)} s"
            f" (starts issued in {_fmt(r.start_window_s, 2)} s from {args.threads} threads)"
        )
        print(
            f"    latency mean {_fmt(r.latency.mean, 2)}, min {_fmt(r.latency.min, 2)},"
            f" max {_fmt(r.latency.max, 2)} ms; hypervisor steal during the latency run"
            f" {_fmt(r.latency_steal_pct, 0, '%')}"
        )
        for note in r.notes:
            print(f"    {note}")
        if r.breakdown:
            print("    one-at-a-time latency by segment (median ms, from the rows' own timestamps):")
            for label, ms in r.breakdown:
                print(f"      {label:<46} {ms:8.2f}")
        if r.cpu and r.cpu_workflows:
            per = r.cpu_workflows
            print(
                f"    CPU during the throughput rounds, ms per workflow by process group ({per} workflows;"
                " idle/steal/wall: seconds, all CPUs)"
            )
            print(
                "      "
                + ", ".join(
                    f"{name} {secs:.1f} s" if name.startswith("(") else f"{name} {secs / per * 1000:.2f}"
                    for name, secs in r.cpu
                )
            )
    print(line)
    print(f"total benchmark time {elapsed:.0f} s")


def report_sweep(rows: list[tuple[int, Result]]) -> None:
    print()
    print("concurrency sweep (throughput only, median of rounds):")
    print(f"{'-c':>4} {'system':<12} {'workflows/s':>11}  rounds")
    for c, r in rows:
        rounds = ", ".join(f"{x:.1f}" for x in r.throughput_rounds)
        print(f"{c:>4} {r.system:<12} {r.throughput_wps:>11.1f}  {rounds}")


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ops.bench.engine",
        description="Engine benchmark: kodo vs DBOS Transact (queue mode) vs raw Celery.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--count", type=int, default=500, help="workflows started at once per throughput round")
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds per system (median reported)")
    p.add_argument("--latency-samples", type=int, default=200, help="one-at-a-time samples (after --warmup)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured one-at-a-time runs before the samples")
    p.add_argument("--warmup-batch", type=int, default=50, help="workflows run concurrently before measuring")
    p.add_argument("--workers", type=int, default=2, help="worker processes per system")
    p.add_argument("--concurrency", type=int, default=2, help="celery -c of each kodo and raw worker")
    p.add_argument("--threads", type=int, default=4, help="threads issuing the starts in a throughput round")
    p.add_argument("--poll-ms", type=float, default=1.0, help="status polling interval of the latency loop")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up a throughput round after this many s"
    )
    p.add_argument("--redis-db", type=int, default=13, help="Redis db of the Celery broker (flushed!)")
    p.add_argument("--allow-shared-broker", action="store_true", help="run even if others use --redis-db")
    p.add_argument("--skip-kodo", action="store_true", help="do not measure kodo")
    p.add_argument("--skip-dbos", action="store_true", help="do not measure DBOS")
    p.add_argument("--skip-raw", action="store_true", help="do not measure raw Celery")
    p.add_argument(
        "--dbos-poll",
        default="1.0,0.01",
        help="comma list of DBOS queue polling_interval_sec values, one DBOS run each (DBOS's default is 1.0)",
    )
    p.add_argument(
        "--dbos-worker-concurrency",
        type=int,
        default=None,
        help="DBOS queue worker_concurrency per process (None: unset, DBOS's default)",
    )
    p.add_argument(
        "--dbos-latency-samples",
        type=int,
        default=50,
        help="one-at-a-time samples for DBOS (each waits for a queue poll: ~1 s at the default interval)",
    )
    p.add_argument(
        "--raw-config",
        choices=["defaults", "kodo"],
        default="defaults",
        help="raw Celery settings: Celery's defaults, or kodo's (acks_late, prefetch 1, task events)",
    )
    p.add_argument(
        "--kodo-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra kodo setting for the kodo workers and client, e.g. KODO_REPUBLISH_AFTER_MS=60000 (repeatable)",
    )
    p.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        default=argparse.SUPPRESS,
        help="skip the in-process kodo profile (Client.start / Engine.execute without Celery)",
    )
    p.add_argument("--profile-count", type=int, default=200, help="workflows in the in-process kodo profile")
    p.add_argument(
        "--sweep",
        default=None,
        help="comma list of -c values: only measure kodo and raw throughput at each, print a table, exit",
    )
    p.add_argument("--log-dir", default=None, help="worker logs (default: a new temporary directory)")
    args = p.parse_args(argv)
    args.profile = getattr(args, "profile", True)  # --no-profile has no default, to keep --help clear
    return args


def _sweep(args: argparse.Namespace, children: Children, run: str) -> list[tuple[int, Result]]:
    rows: list[tuple[int, Result]] = []
    args.latency_samples = 0
    args.profile = False
    for c in (int(x) for x in args.sweep.split(",") if x.strip()):
        args.concurrency = c
        if not args.skip_kodo:
            rows.append((c, run_kodo(args, children, f"{run}c{c}")))
        if not args.skip_raw:
            rows.append((c, run_raw(args, children, f"{run}c{c}")))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="kodo-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = f"b{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log(f"run {run}: logs in {log_dir}; load average {os.getloadavg()[0]:.1f}")
    children = Children(log_dir)
    results: list[Result] = []
    began = time.monotonic()
    try:
        with terminate_on_sigterm():
            if args.sweep:
                report_sweep(_sweep(args, children, run))
                return 0
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
    except SystemExit as exc:
        log(f"terminated by a signal (exit {exc.code})")
        raise
    except BenchError as exc:
        log(f"FAILED: {exc}")
        if results:
            report(results, args, time.monotonic() - began)
        return 1
    finally:
        children.stop_all()
    report(results, args, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
