"""End-to-end benchmark: the whole monolith (`mise run start`) driven over HTTP by concurrent clients.

    python -m ops.bench.e2e [--clients 32] [--runs R | --duration 30] [--tenants 4] [--poll-ms 250]
                            [--fanout 1] [--warmup N] [--approve now|gate] [--json] [--profile [DIR]]

It runs `ops/start.sh` itself (supervisord over the Procfile: API, intent worker, sbx worker,
reconciler + admin, Flower) on free ports with a run directory (`KODO_RUN_DIR`), a database and a
broker of its own (`ops.bench.monolith`: private Postgres and Redis servers by default, `--shared` for
the machine's), so it never disturbs a running dev system; `OC_MODE=replay SBX_MODE=mock`.

Then: an idle sample (`--idle-s`: memory per process group, CPU and statements per second of a stack
doing nothing), `--warmup` unmeasured runs, and the measured window: `--clients` threads each looping
over intent runs (`ops.bench.e2eload`: create, start with a tenant's partition key, approve, poll
`GET /runs/:id` every `--poll-ms` until terminal) until `--runs` have begun or `--duration` seconds
have passed, and the runs in flight have ended. The window is from the clients' release to the last
one's end.

It prints: runs/s; p50/p95/p99 latency from the start request to terminal, as the clients observed it
(polling) and as the server stamped it (`dbos.workflow_status.updated_at` of the run's workflow);
errors by kind; HTTP request times by route; CPU ms per run by process group (`ops.bench.procstat`:
/proc/<pid>/stat of every process of the group, children included, before and after the window) next
to the group's idle CPU per second; Postgres commits and statements per run (`ops.bench.pgstats`) and
the top statements by calls; memory (Pss, Rss) per group at idle and at the end. `--json` prints the
same as one JSON object on stdout (the text goes to stderr). `--profile` profiles the API and both
workers during the window (`ops.bench.profiling`). The exit status is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops import processes
from ops.bench import BenchError, monolith, pgstats, procstat, services
from ops.bench.e2eload import Phase, Shape, run_phase
from ops.bench.e2ereport import report
from ops.bench.monolith import Backends, Monolith
from ops.bench.profiling import TARGETS, CProfileHook, PySpy, ensure_py_spy
from ops.bench.stats import percentile
from ops.processes import ProcessExitedError

TOP_STATEMENTS = 10
JSON_STATEMENTS = 60  # the JSON carries this many (the report prints TOP_STATEMENTS)
SLOWEST = 3  # runs whose timeline the report shows
SETTLE_S = 2.0  # after the stack is up, before the idle sample
GROUP_ORDER = (*monolith.GROUPS, "client", "profiler")

Json = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ops.bench.e2e",
        description="End-to-end benchmark: the monolith (ops/start.sh) driven over HTTP by concurrent clients.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=32, help="concurrent clients, each looping over runs")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--runs", type=int, default=None, help="measured runs in all (default: --duration)")
    size.add_argument(
        "--duration", type=float, default=None, help="seconds of starting measured runs (default 30)"
    )
    p.add_argument(
        "--tenants", type=int, default=4, help="partition keys tenant-0..tenant-(T-1), round robin"
    )
    p.add_argument("--poll-ms", type=float, default=250.0, help="GET /runs/:id interval of each client")
    p.add_argument("--fanout", type=int, default=1, help="sandbox tasks per run (1: the plain run)")
    p.add_argument(
        "--warmup", type=int, default=None, help="unmeasured runs before the window (default max(4, clients))"
    )
    p.add_argument(
        "--approve",
        choices=["now", "gate"],
        default="now",
        help="approve the plan right after the start, or once the run waits at the gate (APPROVE_PLAN)",
    )
    p.add_argument("--idle-s", type=float, default=3.0, help="idle sample before the load (CPU/s at rest)")
    p.add_argument(
        "--run-timeout", type=float, default=60.0, help="a run not terminal after this is an error"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (text to stderr)")
    p.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="profile the API and both workers during the window into DIR (default <log dir>/profile)",
    )
    p.add_argument(
        "--profiler",
        choices=["auto", "py-spy", "cprofile"],
        default="auto",
        help="auto: py-spy (pip-installed into .venv if missing), else cProfile through a sitecustomize",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument(
        "--shared", action="store_true", help="use the machine's Postgres and Redis (see module doc)"
    )
    p.add_argument("--redis-db", type=int, default=14, help="with --shared: the broker's Redis db (flushed!)")
    p.add_argument(
        "--kodo-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the stack, e.g. KODO_API_WORKERS=4 (repeatable)",
    )
    p.add_argument(
        "--log-dir", default=None, help="run directory and logs (default: a new temporary directory)"
    )
    args = p.parse_args(argv)
    if args.runs is None and args.duration is None:
        args.duration = 30.0
    if args.warmup is None:
        args.warmup = max(4, args.clients)
    bad = [
        name
        for name, ok in [
            ("--clients", args.clients >= 1),
            ("--runs", args.runs is None or args.runs >= 1),
            ("--duration", args.duration is None or args.duration > 0),
            ("--tenants", args.tenants >= 1),
            ("--fanout", 1 <= args.fanout <= 100),
            ("--poll-ms", args.poll_ms > 0),
            ("--warmup", args.warmup >= 0),
        ]
        if not ok
    ]
    if bad:
        p.error(f"out of range: {', '.join(bad)} (--fanout 1-100, the compiler's limit)")
    if any("=" not in kv for kv in args.kodo_env):
        p.error("--kodo-env takes KEY=VALUE")
    return args


def dist(values: list[float]) -> Json:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }


class Bench:
    """One run of the benchmark: the stack, its groups, the samples and the result."""

    def __init__(self, args: argparse.Namespace, work_dir: Path, say: Callable[[str], None]) -> None:
        self.args = args
        self.work_dir = work_dir
        self.say = say
        self.backends: Backends | None = None
        self.stack: Monolith | None = None
        self.conn: services.Conn | None = None
        self.pyspy: PySpy | None = None
        self.cprofile: CProfileHook | None = None
        self.profile_note = ""
        self.statements_note: str | None = None
        self.result: Json = {}
        self.mem_idle: list[procstat.GroupMemory] = []
        self.mem_end: list[procstat.GroupMemory] = []
        self.idle_cpu: dict[str, float] = {}
        self.idle_statements_per_s: float | None = None
        self.cpu: list[procstat.GroupCpu] = []
        self.pg = pgstats.PgDelta(0, 0, None)
        self.machine: dict[str, float] = {}

    # ---- setup ----------------------------------------------------------------------------------

    def profile_dir(self) -> Path:
        return Path(self.args.profile) if self.args.profile else self.work_dir / "profile"

    def choose_profiler(self) -> None:
        if self.args.profile is None:
            return
        why = None if self.args.profiler == "cprofile" else ensure_py_spy()
        if self.args.profiler == "py-spy" and why:
            raise BenchError(f"--profiler py-spy: {why}")
        if self.args.profiler == "cprofile" or why:
            self.cprofile = CProfileHook(self.profile_dir())
            self.profile_note = (
                f"cProfile through a sitecustomize ({why or '--profiler cprofile'}): every thread of every"
                " process from its start (startup and warm-up included) to the end of the window"
            )
        else:
            self.pyspy = PySpy(self.profile_dir(), self.args.profile_rate)
            self.profile_note = (
                f"py-spy record --subprocesses --nonblocking --gil, {self.args.profile_rate} Hz, the measured"
                " window only: samples of the thread holding the GIL (Python on the CPU, or waiting for it)"
            )

    def start(self) -> None:
        args = self.args
        self.choose_profiler()
        self.backends = Backends.open(args.shared, args.redis_db, self.work_dir)
        self.say(f"postgres/redis: {self.backends.describe}")
        extra = dict(kv.split("=", 1) for kv in args.kodo_env)
        if self.cprofile is not None:
            extra.update(self.cprofile.env(os.environ.get("PYTHONPATH")))
        version = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        self.stack = Monolith(self.backends, self.work_dir / "run", version, extra)
        self.say(f"starting ops/start.sh (run dir {self.stack.run_dir}, API {self.stack.api_url})")
        self.result["startup_s"] = self.stack.start()
        self.say(f"monolith up in {self.result['startup_s']:.1f}s")
        self.conn = services.connect(self.backends.database_url)
        self.statements_note = pgstats.enable_statements(self.conn)

    def groups(self) -> dict[str, list[int]]:
        assert self.stack is not None and self.backends is not None
        found = self.stack.groups()
        found["postgres"] = self.backends.pg_pids()
        found["redis"] = self.backends.redis_pids()
        found["client"] = [os.getpid()]
        if self.pyspy is not None:
            found["profiler"] = self.pyspy.pids()
        return {name: found.get(name, []) for name in GROUP_ORDER if name in found or name in monolith.GROUPS}

    def pg_sample(self) -> pgstats.PgSample:
        assert self.conn is not None
        return pgstats.sample(self.conn, monolith.DBNAME, self.statements_note is None)

    # ---- the phases -------------------------------------------------------------------------------

    def shape(self) -> Shape:
        a = self.args
        return Shape(a.tenants, a.fanout, a.poll_ms / 1000, a.approve, a.run_timeout)

    def idle(self) -> None:
        time.sleep(SETTLE_S)
        groups = self.groups()
        self.mem_idle = procstat.memory(groups)
        cpu0, pg0, t0 = procstat.CpuSample.take(groups), self.pg_sample(), time.monotonic()
        time.sleep(self.args.idle_s)
        cpu1, pg1 = procstat.CpuSample.take(self.groups()), self.pg_sample()
        wall = time.monotonic() - t0
        self.idle_cpu = {g.name: g.cpu_s / wall for g in procstat.cpu_between(cpu0, cpu1)}
        calls = pgstats.delta(pg0, pg1).statement_calls
        self.idle_statements_per_s = None if calls is None else calls / wall

    def warmup(self) -> None:
        assert self.stack is not None
        if self.args.warmup <= 0:
            return
        self.say(f"warm-up: {self.args.warmup} runs from {self.args.clients} clients")
        phase = run_phase(
            self.stack.api_url, self.shape(), self.args.clients, runs=self.args.warmup, duration_s=None
        )
        bad = sum(phase.tally.errors.values())
        self.say(f"warm-up done in {phase.wall_s:.1f}s ({bad} errors)")
        self.result["warmup"] = {
            "runs": phase.started,
            "errors": dict(phase.tally.errors),
            "wall_s": phase.wall_s,
        }

    def window(self) -> Phase:
        assert self.stack is not None
        a = self.args
        if self.pyspy is not None:
            self.pyspy.start({name: self.stack.main_pid(name) for name in TARGETS})
        what = f"{a.runs} runs" if a.runs is not None else f"runs for {a.duration:g}s"
        self.say(f"measuring: {what} from {a.clients} clients")
        before: dict[str, Any] = {}

        def begin() -> None:
            before["cpu"] = procstat.CpuSample.take(self.groups())
            before["pg"] = self.pg_sample()
            before["machine"] = processes.cpu_idle_steal()

        phase = run_phase(
            self.stack.api_url,
            self.shape(),
            a.clients,
            runs=a.runs,
            duration_s=a.duration,
            first=a.warmup,
            on_begin=begin,
        )
        groups = self.groups()
        cpu_after, pg_after = procstat.CpuSample.take(groups), self.pg_sample()
        machine_after = processes.cpu_idle_steal()
        self.mem_end = procstat.memory(groups)
        self.cpu = procstat.cpu_between(before["cpu"], cpu_after)
        self.pg = pgstats.delta(before["pg"], pg_after)
        idle_s, steal_s = (b - x for x, b in zip(before["machine"], machine_after, strict=True))
        self.machine = {
            "idle_s": idle_s,
            "steal_s": steal_s,
            "capacity_s": phase.wall_s * (os.cpu_count() or 1),
        }
        self.say(f"window done: {phase.started} runs begun in {phase.wall_s:.1f}s")
        if self.pyspy is not None:
            self.result["profile_lines"] = self.pyspy.stop()
        elif self.cprofile is not None:
            self.result["profile_lines"] = self.cprofile.stop(groups)
        return phase

    def stamped(self, phase: Phase) -> list[float]:
        """Server-side latency: the run's workflow's terminal `updated_at` minus the start request."""
        assert self.conn is not None
        runs = {r.run_id: r for r in phase.tally.runs if r.status == "succeeded"}
        rows = self.conn.execute(
            "SELECT r.id, w.updated_at FROM app.runs r JOIN dbos.workflow_status w"
            " ON w.workflow_uuid = r.workflow_id WHERE r.id = ANY(%s) AND w.status = 'SUCCESS'",
            (list(runs),),
        ).fetchall()
        return [float(row["updated_at"]) - runs[row["id"]].started_at * 1000 for row in rows]

    def slowest(self, phase: Phase, k: int = SLOWEST) -> list[Json]:
        """Where the `k` slowest runs spent their time: each point of the run's workflow and of its
        sandbox children as ms after the start request, from the rows' own timestamps."""
        assert self.conn is not None
        runs = sorted(phase.tally.runs, key=lambda r: r.observed_s, reverse=True)[:k]
        out = []
        for run in runs:
            t0 = run.started_at * 1000
            w = self.conn.execute(
                "SELECT w.workflow_uuid, w.created_at, w.started_at_epoch_ms, w.updated_at, w.status,"
                " w.recovery_attempts, w.noop_deliveries FROM app.runs r JOIN dbos.workflow_status w"
                " ON w.workflow_uuid = r.workflow_id WHERE r.id = %s",
                (run.run_id,),
            ).fetchone()
            if w is None:
                continue
            ops = self.conn.execute(
                "SELECT function_name, completed_at_epoch_ms FROM dbos.operation_outputs"
                " WHERE workflow_uuid = %s ORDER BY function_id",
                (w["workflow_uuid"],),
            ).fetchall()
            kids = self.conn.execute(
                "SELECT count(*) AS n, min(created_at) AS created, max(started_at_epoch_ms) AS claimed,"
                " max(updated_at) AS ended, sum(recovery_attempts) AS recoveries,"
                " sum(noop_deliveries) AS noops FROM dbos.workflow_status WHERE parent_workflow_id = %s",
                (w["workflow_uuid"],),
            ).fetchone()
            assert kids is not None

            def rel(ms: Any, t0: float = t0) -> float | None:
                return None if ms is None else float(ms) - t0

            out.append(
                {
                    "run": run.run_id,
                    "tenant": run.tenant,
                    "observed_ms": run.observed_s * 1000,
                    "created": rel(w["created_at"]),
                    "first_claim": rel(w["started_at_epoch_ms"]),
                    "ops": [(o["function_name"], rel(o["completed_at_epoch_ms"])) for o in ops],
                    "children": int(kids["n"]),
                    "children_created": rel(kids["created"]),
                    "children_last_claim": rel(kids["claimed"]),
                    "children_last_end": rel(kids["ended"]),
                    "ended": rel(w["updated_at"]),
                    "status": w["status"],
                    "recoveries": int(w["recovery_attempts"]) + int(kids["recoveries"] or 0),
                    "noop_deliveries": int(w["noop_deliveries"]) + int(kids["noops"] or 0),
                }
            )
        return out

    def queue_limits(self, runs_per_s: float) -> Json:
        """The admission limits in force (`dbos.queue_limits`, where the tree has it) and what the
        rate limits allow this load: a rate per partition lets `tenants` x limit / period tasks a
        second through, a queue-wide rate limit / period; a run is `fanout` sandbox tasks."""
        assert self.conn is not None
        row = self.conn.execute("SELECT to_regclass('dbos.queue_limits') IS NOT NULL AS ok").fetchone()
        if row is None or not row["ok"]:
            return {"rows": [], "cap_runs_per_s": None, "held": False}
        rows = self.conn.execute("SELECT * FROM dbos.queue_limits ORDER BY queue_name").fetchall()
        caps = []
        for r in rows:
            if r["queue_name"] != "sbxQ":
                continue  # the intent queue's rate would count runs, not tasks; none by default
            if r.get("partition_rate_limit"):
                caps.append(
                    self.args.tenants * r["partition_rate_limit"] / (r["partition_rate_period_ms"] / 1000)
                )
            if r.get("rate_limit"):
                caps.append(r["rate_limit"] / (r["rate_period_ms"] / 1000))
        cap = min(caps) / self.args.fanout if caps else None
        keep = [
            "concurrency",
            "worker_concurrency",
            "rate_limit",
            "rate_period_ms",
            "partition_concurrency",
            "partition_worker_concurrency",
            "partition_rate_limit",
            "partition_rate_period_ms",
            "source",
        ]
        shown = [{"queue": r["queue_name"], **{k: r[k] for k in keep if r.get(k) is not None}} for r in rows]
        return {"rows": shown, "cap_runs_per_s": cap, "held": cap is not None and runs_per_s >= 0.9 * cap}

    def stop(self) -> None:
        if self.pyspy is not None:
            self.pyspy.kill()
        if self.conn is not None:
            self.conn.close()
        if self.stack is not None:
            left = self.stack.stop()
            if left:
                self.say(f"killed what ops/stop.sh left: {left}")
        if self.backends is not None:
            self.backends.close()

    # ---- the result -------------------------------------------------------------------------------

    def build(self, phase: Phase) -> Json:
        a, tally = self.args, phase.tally
        ok = [r for r in tally.runs if r.status == "succeeded"]
        n = max(len(ok), 1)
        runs_per_s = len(ok) / phase.wall_s if phase.wall_s > 0 else 0.0
        cpu_rows: list[Json] = []
        for g in self.cpu:
            if g.name == "profiler" and g.procs_after == 0:
                continue
            cpu_rows.append(
                {
                    "group": g.name,
                    "ms_per_run": g.cpu_s * 1000 / n,
                    "cpu_s": g.cpu_s,
                    "idle_ms_per_s": self.idle_cpu.get(g.name, 0.0) * 1000,
                    "procs": g.procs_after,
                    "exited": g.exited,
                }
            )
        measured = sum(r["cpu_s"] for r in cpu_rows if r["group"] != "profiler")
        busy = self.machine["capacity_s"] - self.machine["idle_s"] - self.machine["steal_s"]
        profiler_s = sum(r["cpu_s"] for r in cpu_rows if r["group"] == "profiler")
        stmts = self.pg.statements
        top = [
            {
                "query": " ".join(s.query.split()),
                "calls_per_run": s.calls / n,
                "mean_ms": s.total_ms / s.calls,
                "rows_per_run": s.rows / n,
            }
            for s in (stmts or [])[:JSON_STATEMENTS]
        ]
        explicit = {
            word: sum(s.calls for s in stmts or [] if s.query.strip().upper() == word)
            for word in ("BEGIN", "COMMIT")
        }
        idle_mem = {m.name: m for m in self.mem_idle}
        memory = [
            {
                "group": m.name,
                "procs_idle": idle_mem[m.name].procs if m.name in idle_mem else 0,
                "pss_idle_mb": idle_mem[m.name].pss_kb / 1024 if m.name in idle_mem else 0.0,
                "rss_idle_mb": idle_mem[m.name].rss_kb / 1024 if m.name in idle_mem else 0.0,
                "procs_end": m.procs,
                "pss_end_mb": m.pss_kb / 1024,
                "rss_end_mb": m.rss_kb / 1024,
            }
            for m in self.mem_end
            if m.name != "profiler"
        ]
        assert self.backends is not None
        return {
            **self.result,
            "config": {
                "clients": a.clients,
                "runs": a.runs,
                "duration_s": a.duration,
                "warmup": a.warmup,
                "tenants": a.tenants,
                "poll_ms": a.poll_ms,
                "fanout": a.fanout,
                "approve": a.approve,
                "kodo_env": a.kodo_env,
                "backends": self.backends.describe,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "load_average": os.getloadavg()[0],
            },
            "window_s": phase.wall_s,
            "runs_begun": phase.started,
            "runs_succeeded": len(ok),
            "runs_per_s": runs_per_s,
            "queue_limits": self.queue_limits(runs_per_s),
            "latency_ms": {
                "observed": dist([r.observed_s * 1000 for r in ok]),
                "server": dist(self.stamped(phase)),
            },
            "errors": dict(tally.errors.most_common()),
            "error_count": sum(tally.errors.values()),
            "requests_ms": {route: dist(ms) for route, ms in sorted(tally.requests.items())},
            "cpu": cpu_rows,
            "cpu_total_ms_per_run": measured * 1000 / n,
            "machine": {
                **self.machine,
                "other_s": max(busy - measured - profiler_s, 0.0),
                "busy_pct": 100 * busy / self.machine["capacity_s"],
            },
            "postgres": {
                "database": monolith.DBNAME,
                "commits": self.pg.commits,
                "commits_per_run": self.pg.commits / n,
                "rollbacks": self.pg.rollbacks,
                "statements_note": self.statements_note,
                "statements": self.pg.statement_calls,
                "statements_per_run": None if stmts is None else (self.pg.statement_calls or 0) / n,
                "begin_per_run": None if stmts is None else explicit["BEGIN"] / n,
                "commit_statements_per_run": None if stmts is None else explicit["COMMIT"] / n,
                "idle_statements_per_s": self.idle_statements_per_s,
                "top": top[:TOP_STATEMENTS],
                "more": top[TOP_STATEMENTS:],  # the next ones by calls, in the JSON only
            },
            "memory": memory,
            "slowest": self.slowest(phase),
            "profile": None
            if a.profile is None
            else {
                "dir": str(self.profile_dir()),
                "tool": self.profile_note,
                "lines": self.result.get("profile_lines", []),
            },
            "log_dir": str(self.work_dir),
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text_out = sys.stderr if args.json else sys.stdout

    def say(msg: str) -> None:
        print(f"[bench-e2e {time.strftime('%H:%M:%S')}] {msg}", file=text_out, flush=True)

    work_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="kodo-bench-e2e-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work_dir, say)
    began = time.monotonic()
    try:
        with processes.signals_exit():
            bench.start()
            bench.idle()
            bench.warmup()
            phase = bench.window()
            result = bench.build(phase)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (BenchError, ProcessExitedError, TimeoutError) as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        bench.stop()
    result["total_s"] = time.monotonic() - began
    report(result, text_out)
    print(f"total benchmark time {result['total_s']:.0f} s", file=text_out)
    if args.json:
        print(json.dumps(result, default=str))
    return 1 if result["error_count"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
