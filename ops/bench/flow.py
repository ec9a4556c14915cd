"""Flow-control benchmark (issue 9 item 8): fan-out completion time, and what admission costs.

    python -m ops.bench.flow [--fanout 100,1000] [--pairs 2] [--count 500] ...

1. Fan-out: one `bench.fan_out(N)` parent on intentQ starts N one-step `bench.task` children on sbxQ
   in one batch (one partition) and waits once for all of them. Workers: one intentQ worker and
   `--workers` sbxQ workers (`-c --concurrency` each), with sbxQ's default limits (50 per partition,
   10 per worker and partition) and its rate limit raised to 1,000,000 per 60 s (at the default
   100 per 60 s, N=1000 would take ten minutes by design). Printed: completion time, tasks/s, how
   many times the parent was claimed (each claim replays it), and its recorded operations.
2. Admission overhead: the engine benchmark's kodo run (`ops.bench.engine`'s workload: four no-op
   steps on intentQ; throughput of `--count` started at once, median of `--rounds`, then one-at-a-time
   latency) with intentQ unlimited, and with intentQ limits far above the load (every cap and rate
   at 1,000,000), alternating `--pairs` times on the same machine. Also the statements one
   `Client.start` issues in each mode, counted in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from kodo.config import Settings
from kodo.db import migrate, pool
from kodo.dispatch import producer_app
from kodo.runtime import Runtime
from ops import processes
from ops.bench import BenchError, log
from ops.bench.engine import parse_args as engine_args
from ops.bench.kodo_profile import close_runtime
from ops.bench.kodo_workflows import fan_out, four_noops
from ops.bench.services import connect, prepare_broker
from ops.bench.stats import Result
from ops.bench.systems import _start_celery_workers, kodo_env, run_kodo
from ops.processes import ProcessExitedError, Supervisor

FAR_ABOVE = "1000000"
LIMITS_FAR_ABOVE = [
    f"INTENT_QUEUE_GLOBAL_CONCURRENCY={FAR_ABOVE}",
    f"INTENT_QUEUE_GLOBAL_RATE_LIMIT_PER_PERIOD={FAR_ABOVE}",
    f"INTENT_QUEUE_CONCURRENCY={FAR_ABOVE}",
    f"INTENT_QUEUE_RATE_LIMIT_PER_PERIOD={FAR_ABOVE}",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ops.bench.flow",
        description="Flow-control benchmark: fan-out completion time, and admission overhead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--fanout", default="100,1000", help="comma list of fan-out sizes (empty: skip)")
    p.add_argument("--pairs", type=int, default=2, help="alternating no-limits / limits runs (0: skip)")
    p.add_argument("--count", type=int, default=500, help="workflows per throughput round")
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds per run (median reported)")
    p.add_argument("--latency-samples", type=int, default=100, help="one-at-a-time samples per run")
    p.add_argument("--workers", type=int, default=2, help="worker processes per queue")
    p.add_argument("--concurrency", type=int, default=2, help="celery -c of each worker")
    p.add_argument("--starts", type=int, default=200, help="starts whose statements are counted per mode")
    p.add_argument(
        "--sbx-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the fan-out run, e.g. SBX_QUEUE_CONCURRENCY=none (repeatable)",
    )
    p.add_argument(
        "--limits",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="the limits of the 'limits' runs (repeatable; default: every intentQ cap and rate at 1,000,000)",
    )
    p.add_argument("--redis-db", type=int, default=13, help="Redis db of the broker (flushed!)")
    p.add_argument("--allow-shared-broker", action="store_true", help="run even if others use --redis-db")
    p.add_argument("--log-dir", default=None, help="worker logs (default: a new temporary directory)")
    return p.parse_args(argv)


# ---- fan-out ------------------------------------------------------------------------------------


def run_fanout(args: argparse.Namespace, sup: Supervisor, run: str, n: int) -> dict[str, Any]:
    env = kodo_env(args.redis_db, run, [f"SBX_QUEUE_RATE_LIMIT_PER_PERIOD={FAR_ABOVE}", *args.sbx_env])
    settings = Settings.from_env(env)
    migrate.reset_schema(settings.database_url, "dbos")
    prepare_broker(args.redis_db, args.allow_shared_broker)
    rt = Runtime.build(settings)
    pinger = producer_app(settings)
    workers = []
    try:
        one = argparse.Namespace(**{**vars(args), "workers": 1})
        workers += _start_celery_workers(
            sup, one, pinger, prefix=f"{run}-i", app="kodo", queue="intentQ", env=env
        )
        workers += _start_celery_workers(
            sup, args, pinger, prefix=f"{run}-s", app="kodo", queue="sbxQ", env=env
        )
        wid = f"{run}-fan"
        began = time.monotonic()
        rt.client.start(fan_out, n, "bench", workflow_id=wid)
        row = rt.client.wait(wid, 600)
        elapsed = time.monotonic() - began
        if row["status"] != "SUCCESS":
            raise BenchError(f"fan-out {n}: parent ended {row['status']}: {row.get('error')}")
        with connect(settings.database_url) as c:
            kids = c.execute(
                "SELECT count(*) FILTER (WHERE status = 'SUCCESS') AS ok, sum(lease_epoch) AS claims,"
                " sum(noop_deliveries) AS noops FROM dbos.workflow_status WHERE parent_workflow_id = %s",
                (wid,),
            ).fetchone()
        assert kids is not None
        ops = [s["function_name"] for s in rt.client.steps(wid)]
        return {
            "n": n,
            "seconds": elapsed,
            "tasks_per_s": n / elapsed,
            "parent_claims": row["lease_epoch"],
            "parent_operations": ops,
            "children_ok": kids["ok"],
            "child_claims": kids["claims"],
            "noop_deliveries": kids["noops"],
        }
    finally:
        sup.stop(*workers)
        pinger.close()
        close_runtime(rt)


# ---- admission overhead -------------------------------------------------------------------------


@contextmanager
def counting_statements() -> Iterator[list[int]]:
    """Count the statements this process sends (psycopg cursors' execute)."""
    counter = [0]
    original = psycopg.Cursor.execute

    def execute(self: Any, *a: Any, **kw: Any) -> Any:
        counter[0] += 1
        return original(self, *a, **kw)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]


def statements_per_start(args: argparse.Namespace, run: str, extra: list[str]) -> float:
    """Statements one Client.start issues (no workers run: rows are inserted, admitted, published)."""
    env = kodo_env(args.redis_db, run, extra)
    settings = Settings.from_env(env)
    migrate.reset_schema(settings.database_url, "dbos")
    prepare_broker(args.redis_db, args.allow_shared_broker)
    rt = Runtime.build(settings)
    try:
        rt.reconciler().write_env_limits()  # what a worker's reconciler writes at start-up
        for i in range(20):  # warm: pool, prepared statements, the limited-queues read
            rt.client.start(four_noops, workflow_id=f"{run}-warm-{i}")
        with counting_statements() as n:
            for i in range(args.starts):
                rt.client.start(four_noops, workflow_id=f"{run}-s-{i}")
        return n[0] / int(args.starts)
    finally:
        close_runtime(rt)
        prepare_broker(args.redis_db, args.allow_shared_broker)


def run_overhead(args: argparse.Namespace, sup: Supervisor, run: str, mode: str, i: int) -> Result:
    extra = (args.limits or LIMITS_FAR_ABOVE) if mode == "limits" else []
    eargs = engine_args(
        [
            "--count",
            str(args.count),
            "--rounds",
            str(args.rounds),
            "--latency-samples",
            str(args.latency_samples),
            "--workers",
            str(args.workers),
            "--concurrency",
            str(args.concurrency),
            "--redis-db",
            str(args.redis_db),
            "--no-profile",
            *(["--allow-shared-broker"] if args.allow_shared_broker else []),
            *(x for item in extra for x in ("--kodo-env", item)),
        ]
    )
    return run_kodo(eargs, sup, f"{run}{mode[0]}{i}")


# ---- report -------------------------------------------------------------------------------------


def report(fan: list[dict[str, Any]], overhead: list[tuple[str, Result]], stmts: dict[str, float]) -> None:
    line = "=" * 100
    print()
    print(line)
    print(f"FLOW BENCHMARK ({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end)")
    print(line)
    if fan:
        print("Fan-out: one parent, N one-step tasks started in one batch, one partition, 2 sbx workers")
        print(
            f"{'N':>6} {'seconds':>9} {'tasks/s':>9} {'parent claims':>14} {'child claims':>13} {'no-ops':>7}"
        )
        for f in fan:
            print(
                f"{f['n']:>6} {f['seconds']:>9.2f} {f['tasks_per_s']:>9.1f} {f['parent_claims']:>14}"
                f" {f['child_claims']:>13} {f['noop_deliveries']:>7}"
            )
            print(f"       parent operations: {f['parent_operations']}")
    if overhead:
        print()
        print("Admission overhead: four no-op steps on intentQ, unlimited vs limits far above the load")
        print(f"{'run':<10} {'wf/s (median)':>14} {'rounds':>26} {'latency p50 ms':>15} {'p99 ms':>8}")
        by_mode: dict[str, list[Result]] = {}
        for mode, r in overhead:
            by_mode.setdefault(mode, []).append(r)
            rounds = ", ".join(f"{x:.0f}" for x in r.throughput_rounds)
            print(
                f"{mode:<10} {r.throughput_wps:>14.1f} {rounds:>26} {r.latency.median:>15.2f} {r.latency.p99:>8.2f}"
            )
        if {"none", "limits"} <= set(by_mode):
            none = statistics.median(r.throughput_wps for r in by_mode["none"])
            lim = statistics.median(r.throughput_wps for r in by_mode["limits"])
            print(
                f"median wf/s: unlimited {none:.1f}, limits {lim:.1f}:"
                f" admission costs {100 * (none - lim) / none:+.1f}% of throughput (target: at most 10%)"
            )
            lat_none = statistics.median(r.latency.median for r in by_mode["none"])
            lat_lim = statistics.median(r.latency.median for r in by_mode["limits"])
            print(f"median latency p50: unlimited {lat_none:.2f} ms, limits {lat_lim:.2f} ms")
    if stmts:
        print()
        print("Statements per Client.start (counted in the starting process):")
        for mode, v in stmts.items():
            print(f"  {mode:<8} {v:.2f}")
        if {"none", "limits"} <= set(stmts):
            print(
                f"  admission adds {stmts['limits'] - stmts['none']:.2f} statement per start (target: at most 1)"
            )
    print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="kodo-flow-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = f"f{time.strftime('%H%M%S')}{uuid.uuid4().hex[:4]}"
    log(f"run {run}: logs in {log_dir}; load average {os.getloadavg()[0]:.1f}")
    sup = Supervisor(log_dir, warn=log)
    fan: list[dict[str, Any]] = []
    overhead: list[tuple[str, Result]] = []
    stmts: dict[str, float] = {}
    try:
        with processes.signals_exit():
            for n in (int(x) for x in args.fanout.split(",") if x.strip()):
                log(f"fan-out N={n}")
                fan.append(run_fanout(args, sup, f"{run}n{n}", n))
            if args.pairs:
                stmts["none"] = statements_per_start(args, f"{run}sn", [])
                stmts["limits"] = statements_per_start(args, f"{run}sl", args.limits or LIMITS_FAR_ABOVE)
            for i in range(args.pairs):
                for mode in ("none", "limits") if i % 2 == 0 else ("limits", "none"):
                    log(f"admission overhead: pair {i + 1}, {mode}")
                    overhead.append((mode, run_overhead(args, sup, run, mode, i)))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (BenchError, ProcessExitedError, TimeoutError) as exc:
        log(f"FAILED: {exc}")
        report(fan, overhead, stmts)
        return 1
    finally:
        sup.stop_all()
        pool.close_all()
    report(fan, overhead, stmts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
