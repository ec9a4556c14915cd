"""Engine benchmark: kodo vs DBOS Transact (queue mode) vs raw Celery, on the same Postgres and Redis.

    python -m ops.bench.engine [--count 500] [--latency-samples 200] [--concurrency N] ...

Workload: a workflow of four no-op steps (raw Celery: one task doing four autocommit INSERTs).
For each system: two worker processes; `--rounds` times `--count` workflows started as fast as possible
(throughput = count / (last completion - first start), median of the rounds), then `--latency-samples`
workflows one at a time (start, wait for SUCCESS, next) after `--warmup` unmeasured ones. The timing
method is described in `ops.bench.measure`; each system's run is in `ops.bench.systems`.

Databases: kodo and raw Celery use `kodo_bench` (its `dbos` schema is reset each run; raw Celery writes
`public.bench_raw`); DBOS uses its own `kodo_bench_dbos` (dropped and recreated per DBOS run). Redis:
db `--redis-db` (13), flushed before each Celery system; the run refuses to start if another client is
connected to that db (its workers would take our messages). Workers run as subprocesses in their own
process groups and are killed when the run ends, also on error or Ctrl-C. Logs go to a temporary
directory (printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from ops import processes
from ops.bench import BenchError, log
from ops.bench.report import report, report_sweep
from ops.bench.stats import Result
from ops.bench.systems import run_dbos, run_kodo, run_raw, sweep
from ops.processes import ProcessExitedError, Supervisor


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="kodo-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = f"b{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log(f"run {run}: logs in {log_dir}; load average {os.getloadavg()[0]:.1f}")
    sup = Supervisor(log_dir, warn=log)
    results: list[Result] = []
    began = time.monotonic()
    try:
        with processes.signals_exit():
            if args.sweep:
                report_sweep(sweep(args, sup, run))
                return 0
            if not args.skip_kodo:
                results.append(run_kodo(args, sup, run))
            if not args.skip_raw:
                results.append(run_raw(args, sup, run))
            if not args.skip_dbos:
                for poll in (float(x) for x in args.dbos_poll.split(",") if x.strip()):
                    results.append(run_dbos(args, sup, run, poll))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except SystemExit as exc:
        log(f"terminated by a signal (exit {exc.code})")
        raise
    except (BenchError, ProcessExitedError, TimeoutError) as exc:  # a worker died or never got ready
        log(f"FAILED: {exc}")
        if results:
            report(results, args, time.monotonic() - began)
        return 1
    finally:
        sup.stop_all()
    report(results, args, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
