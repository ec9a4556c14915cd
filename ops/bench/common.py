"""Shared pieces of the engine benchmark: measurement loops, probes, statistics, child processes.

Used by `ops.bench.engine` (kodo, raw Celery) and by the DBOS driver subprocess (`ops.bench.dbos_app`),
so all three systems are measured by the same code.

Timing method. Every start call is preceded by `t0 = time.time()`. Completion is the timestamp the
system itself wrote when the workflow finished, on the same machine clock (epoch ms):
- kodo and DBOS: `dbos.workflow_status.updated_at` of the SUCCESS row (1 ms resolution; kodo writes
  `int(time.time()*1000)`, DBOS writes Postgres `now()` rounded to ms);
- raw Celery: the `ts_ms` of the task's fourth INSERT (`time.time()*1000`, sub-ms).
Latency = completion - t0. The benchmark also polls until it observes the row (every `poll_s`) and
reports that "observed" latency next to it; the polling interval does not enter the precise figure.
Throughput = N / (last completion - t0 of the first start).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
import redis
from psycopg import sql
from psycopg.rows import DictRow, dict_row

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

Conn = psycopg.Connection[DictRow]
StartFn = Callable[[str], None]


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def db_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def connect(url: str) -> Conn:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


# ---- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Dist:
    n: int
    median: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(values),
            median=statistics.median(values),
            p99=percentile(values, 99),
            mean=statistics.fmean(values),
            min=min(values),
            max=max(values),
        )


@dataclass
class Result:
    """What one system measured; serialised to JSON by the DBOS driver subprocess."""

    system: str
    config: str
    count: int = 0
    throughput_wps: float = math.nan  # median over the rounds
    throughput_rounds: list[float] = field(default_factory=list)
    throughput_window_s: float = math.nan  # of the median round
    start_window_s: float = math.nan  # of the median round
    latency: Dist = field(default_factory=lambda: Dist.of([]))
    observed: Dist = field(default_factory=lambda: Dist.of([]))
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    cpu: list[tuple[str, float]] = field(default_factory=list)  # seconds over all throughput rounds
    cpu_workflows: int = 0  # workflows those CPU seconds were spent on
    latency_steal_pct: float = math.nan  # hypervisor steal during the latency run (noise indicator)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Result:
        d = json.loads(text)
        d["latency"] = Dist(**d["latency"])
        d["observed"] = Dist(**d["observed"])
        d["breakdown"] = [tuple(x) for x in d["breakdown"]]
        d["cpu"] = [tuple(x) for x in d["cpu"]]
        return cls(**d)


# ---- probes: how the benchmark sees completion ---------------------------------------------------


class Probe(Protocol):
    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        """(done, failed, last completion epoch ms) over `keys`."""
        ...

    def completion_ms(self, key: str) -> float | None:
        """Completion epoch ms of one key, None while not done; raises BenchError if it failed."""
        ...

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        """Per key: the epoch-ms points named by `labels` (for the latency breakdown)."""
        ...

    labels: list[str]


_FAILED = ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


class WorkflowStatusProbe:
    """kodo and DBOS share the shape of `dbos.workflow_status` / `dbos.operation_outputs`."""

    def __init__(self, conn: Conn, claimed_label: str) -> None:
        self.conn = conn
        self.labels = [
            "row inserted",
            claimed_label,
            "step 1 done",
            "step 2 done",
            "step 3 done",
            "step 4 done",
            "SUCCESS written",
        ]

    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS') AS done,"
            " count(*) FILTER (WHERE status = ANY(%(failed)s)) AS failed,"
            " max(updated_at) FILTER (WHERE status = 'SUCCESS') AS last"
            " FROM dbos.workflow_status WHERE workflow_uuid = ANY(%(keys)s)",
            {"keys": list(keys), "failed": list(_FAILED)},
        ).fetchone()
        assert row is not None
        return int(row["done"]), int(row["failed"]), None if row["last"] is None else float(row["last"])

    def completion_ms(self, key: str) -> float | None:
        row = self.conn.execute(
            "SELECT status, updated_at, error FROM dbos.workflow_status WHERE workflow_uuid = %s", (key,)
        ).fetchone()
        if row is None or row["status"] in ("ENQUEUED", "PENDING", "DELAYED"):
            return None
        if row["status"] != "SUCCESS":
            raise BenchError(f"workflow {key} ended {row['status']}: {str(row['error'])[:300]}")
        return float(row["updated_at"])

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        rows = self.conn.execute(
            "SELECT w.workflow_uuid AS k, w.created_at, w.started_at_epoch_ms, w.updated_at,"
            " array_agg(o.completed_at_epoch_ms ORDER BY o.function_id) AS steps"
            " FROM dbos.workflow_status w LEFT JOIN dbos.operation_outputs o USING (workflow_uuid)"
            " WHERE w.workflow_uuid = ANY(%s) GROUP BY 1, 2, 3, 4",
            (list(keys),),
        ).fetchall()
        out: dict[str, list[float | None]] = {}
        for r in rows:
            steps = [s for s in (r["steps"] or []) if s is not None]
            if len(steps) != 4:
                continue
            out[r["k"]] = [r["created_at"], r["started_at_epoch_ms"], *steps, r["updated_at"]]
        return out


class RawProbe:
    """Raw Celery: completion is the timestamp of the task's fourth INSERT."""

    labels = ["insert 1", "insert 2", "insert 3", "insert 4"]

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def progress(self, keys: Sequence[str]) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT count(*) AS done, max(ts_ms) AS last FROM public.bench_raw"
            " WHERE step = 4 AND task_key = ANY(%s)",
            (list(keys),),
        ).fetchone()
        assert row is not None
        return int(row["done"]), 0, None if row["last"] is None else float(row["last"])

    def completion_ms(self, key: str) -> float | None:
        row = self.conn.execute(
            "SELECT ts_ms FROM public.bench_raw WHERE task_key = %s AND step = 4", (key,)
        ).fetchone()
        return None if row is None else float(row["ts_ms"])

    def timeline(self, keys: Sequence[str]) -> dict[str, list[float | None]]:
        rows = self.conn.execute(
            "SELECT task_key AS k, array_agg(ts_ms ORDER BY step) AS ts FROM public.bench_raw"
            " WHERE task_key = ANY(%s) GROUP BY 1",
            (list(keys),),
        ).fetchall()
        return {r["k"]: list(r["ts"]) for r in rows if len(r["ts"]) == 4}


# ---- measurement loops ----------------------------------------------------------------------------


def wait_all(probe: Probe, keys: Sequence[str], timeout_s: float, what: str) -> float:
    """Block until every key finished; returns the last completion (epoch ms)."""
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + 5.0
    while True:
        done, failed, last = probe.progress(keys)
        if failed:
            raise BenchError(f"{what}: {failed} workflows failed")
        if done >= len(keys):
            assert last is not None
            return last
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"{what}: only {done}/{len(keys)} finished after {timeout_s:.0f}s")
        if now >= next_report:
            log(f"  {what}: {done}/{len(keys)} done")
            next_report = now + 5.0
        time.sleep(0.02)


def start_concurrently(start: StartFn, keys: Sequence[str], threads: int) -> tuple[float, float]:
    """Issue every start from `threads` threads. Returns (t0 epoch s of the first start, wall s)."""
    chunks = [list(keys[i::threads]) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(chunk: list[str]) -> None:
        barrier.wait()
        try:
            for k in chunk:
                start(k)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(c,), daemon=True) for c in chunks]
    for w in workers:
        w.start()
    t0 = time.time()
    barrier.wait()
    for w in workers:
        w.join()
    wall = time.time() - t0
    if errors:
        raise BenchError(f"start failed: {errors[0]!r}") from errors[0]
    return t0, wall


def measure_throughput(
    start: StartFn, probe: Probe, keys: Sequence[str], *, threads: int, timeout_s: float, what: str
) -> tuple[float, float]:
    """Start every key at once; returns (seconds from the first start to the last completion, start wall)."""
    t0, start_wall = start_concurrently(start, keys, threads)
    log(f"  {what}: {len(keys)} started in {start_wall:.2f}s from {threads} threads; waiting")
    last_ms = wait_all(probe, keys, timeout_s, what)
    window = (last_ms - t0 * 1000) / 1000
    log(f"  {what}: {len(keys)} workflows in {window:.2f}s = {len(keys) / window:.1f}/s")
    return window, start_wall


def measure_latency(
    result: Result,
    start: StartFn,
    probe: Probe,
    keys: Sequence[str],
    *,
    warmup: int,
    poll_s: float,
    timeout_s: float = 30.0,
) -> None:
    """One workflow at a time: start, wait until its completion is observed, next."""
    stamped: list[float] = []
    observed: list[float] = []
    t0s: dict[str, float] = {}
    total = len(keys)
    stat0, wall0 = _system_cpu(), time.monotonic()
    for i, key in enumerate(keys):
        t0 = time.time()
        start(key)
        deadline = time.monotonic() + timeout_s
        while True:
            done_ms = probe.completion_ms(key)
            if done_ms is not None:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{result.system} latency: {key} not done after {timeout_s}s")
            time.sleep(poll_s)
        seen = time.time()
        if i >= warmup:
            t0s[key] = t0 * 1000
            stamped.append(done_ms - t0 * 1000)
            observed.append((seen - t0) * 1000)
        if stamped and (i + 1) % max(total // 4, 1) == 0:
            log(
                f"  {result.system} latency: {i + 1}/{total} (median so far {statistics.median(stamped or [0]):.1f} ms)"
            )
    steal = _system_cpu()[1] - stat0[1]
    result.latency_steal_pct = 100 * steal / ((time.monotonic() - wall0) * (os.cpu_count() or 1))
    result.latency = Dist.of(stamped)
    result.observed = Dist.of(observed)
    result.breakdown = breakdown(probe, t0s)


@dataclass(frozen=True)
class Plan:
    """What to run against one system (the same for all three)."""

    run_id: str
    count: int
    samples: int
    warmup: int
    warmup_batch: int
    threads: int
    poll_ms: float
    timeout_s: float
    rounds: int

    @classmethod
    def from_args(cls, args: Any, run_id: str, samples: int) -> Plan:
        """The plan from a command line that has the shared timing options."""
        return cls(
            run_id=run_id,
            count=args.count,
            samples=samples,
            warmup=args.warmup,
            warmup_batch=args.warmup_batch,
            threads=args.threads,
            poll_ms=args.poll_ms,
            timeout_s=args.timeout,
            rounds=args.rounds,
        )


def measure_all(
    result: Result,
    start: StartFn,
    probe: Probe,
    plan: Plan,
    worker_pgids: set[int],
    drain: Callable[[], float] | None = None,
) -> None:
    """Warm-up batch, `rounds` throughput runs (with CPU accounting), then the one-at-a-time latency run.

    `drain` (Celery systems) waits until the broker holds no message, so leftovers of one round (e.g.
    duplicate deliveries) do not run inside the next; it returns the seconds it waited.
    """
    run = plan.run_id
    warm = [f"{run}-warm-{i}" for i in range(plan.warmup_batch)]
    start_concurrently(start, warm, plan.threads)
    wait_all(probe, warm, 120, f"{result.system} warm-up")
    log(f"  {result.system}: warm-up batch of {len(warm)} done")
    if drain is not None:
        drain()
    meter = CpuMeter(standard_cpu_groups(worker_pgids))
    meter.begin()
    runs: list[tuple[float, float]] = []
    drained: list[float] = []
    for r in range(1, plan.rounds + 1):
        keys = [f"{run}-tp{r}-{i}" for i in range(plan.count)]
        what = f"{result.system} throughput round {r}/{plan.rounds}"
        runs.append(
            measure_throughput(start, probe, keys, threads=plan.threads, timeout_s=plan.timeout_s, what=what)
        )
        if drain is not None:
            drained.append(drain())
    result.cpu = meter.end()
    if any(d > 0.2 for d in drained):
        result.notes.append(
            "messages still queued after all workflows of a round were done (drained before going on): "
            + ", ".join(f"{d:.1f} s" for d in drained)
        )
    result.cpu_workflows = plan.count * plan.rounds
    result.count = plan.count
    result.throughput_rounds = [plan.count / window for window, _ in runs]
    window, start_wall = sorted(runs)[len(runs) // 2]
    result.throughput_window_s = window
    result.start_window_s = start_wall
    result.throughput_wps = plan.count / window
    if plan.samples > 0:
        lat = [f"{run}-lat-{i}" for i in range(plan.warmup + plan.samples)]
        measure_latency(result, start, probe, lat, warmup=plan.warmup, poll_s=plan.poll_ms / 1000)


def breakdown(probe: Probe, t0s: dict[str, float]) -> list[tuple[str, float]]:
    """Median ms of each segment start call -> label[0] -> label[1] -> ... over the latency samples."""
    timelines = probe.timeline(list(t0s))
    segments: list[list[float]] = [[] for _ in probe.labels]
    for key, points in timelines.items():
        prev = t0s[key]
        for i, p in enumerate(points):
            if p is None:
                break
            segments[i].append(float(p) - prev)
            prev = float(p)
    out: list[tuple[str, float]] = []
    prev_label = "start call"
    for label, values in zip(probe.labels, segments, strict=True):
        if values:
            out.append((f"{prev_label} -> {label}", statistics.median(values)))
        prev_label = label
    return out


# ---- CPU accounting (where the time goes during the throughput run) -------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[str, int, float]]:
    """pid -> (comm, pgid, cpu seconds) for every process we can read."""
    out: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is state (field 3); pgrp is field 5, utime 14, stime 15.
        out[int(entry)] = (comm, int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK)
    return out


class CpuMeter:
    """CPU seconds used per process group (by category) between `begin()` and `end()`."""

    def __init__(self, groups: dict[str, Callable[[int, int, str], bool]]) -> None:
        self.groups = groups
        self._before: dict[int, tuple[str, int, float]] = {}
        self._stat = (0.0, 0.0)
        self._t0 = 0.0

    def begin(self) -> None:
        self._before = _proc_table()
        self._stat = _system_cpu()
        self._t0 = time.monotonic()

    def end(self) -> list[tuple[str, float]]:
        after = _proc_table()
        idle, steal = (b - a for a, b in zip(self._stat, _system_cpu(), strict=True))
        wall = time.monotonic() - self._t0
        totals: dict[str, float] = {name: 0.0 for name in self.groups}
        totals["other"] = 0.0
        for pid, (comm, pgid, cpu) in after.items():
            used = cpu - self._before.get(pid, (comm, pgid, 0.0))[2]
            if used <= 0:
                continue
            for name, match in self.groups.items():
                if match(pid, pgid, comm):
                    totals[name] += used
                    break
            else:
                totals["other"] += used
        rows = [(name, secs) for name, secs in totals.items() if secs > 0.005]
        rows += [("(idle)", idle), ("(steal)", steal), ("(wall clock)", wall)]
        return rows


def _system_cpu() -> tuple[float, float]:
    """Seconds of (idle + iowait, steal) summed over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (fields[3] + fields[4]) / _TICK, fields[7] / _TICK


def standard_cpu_groups(worker_pgids: set[int]) -> dict[str, Callable[[int, int, str], bool]]:
    me = os.getpid()
    return {
        "workers": lambda pid, pgid, comm: pgid in worker_pgids,
        "benchmark driver": lambda pid, pgid, comm: pid == me,
        "postgres": lambda pid, pgid, comm: comm.startswith("postgres"),
        "redis": lambda pid, pgid, comm: comm.startswith("redis"),
    }


# ---- child processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: the child leads its own process group

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_line(self, needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            if needle in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name}: no {needle!r} after {timeout_s}s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.pgid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.pgid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        # Pool children may outlive a main process that died first: make sure the group is gone.
        with suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)


class Children:
    """Every child process this run started; `stop_all()` ends them (called from finally)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Child:
        path = self.log_dir / f"{name}.log"
        with path.open("wb") as fh:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        child = Child(name, proc, path)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        while self.children:
            self.stop(self.children[-1])


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks (killing children) run."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def base_env() -> dict[str, str]:
    """The parent's environment without any kodo/DBOS settings, plus PYTHONPATH=<repo>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODO_", "DBOS__", "APP_DB_NAME"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def broker_backlog(r: redis.Redis[bytes], queue: str) -> int:
    """Messages of `queue` still in a Celery Redis broker: queued (every priority list) or unacked."""
    lists = [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))]  # kombu's priority-list key names
    return sum(int(r.llen(key)) for key in lists) + int(r.hlen("unacked"))


def broker_drain(broker_url: str, queue: str, timeout_s: float = 180.0) -> Callable[[], float]:
    """A `drain` for `measure_all`: block until the broker holds no message of `queue`."""
    r = redis.Redis.from_url(broker_url)

    def drain() -> float:
        began = time.monotonic()
        while (left := broker_backlog(r, queue)) > 0:
            if time.monotonic() - began > timeout_s:
                raise BenchError(f"broker still holds {left} messages of {queue} after {timeout_s:.0f}s")
            time.sleep(0.05)
        return time.monotonic() - began

    return drain


def own_tcp_ports() -> set[int]:
    """Local TCP ports of this process's sockets (to tell our broker connections from others')."""
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[9] in inodes:
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def recreate_database(name: str) -> None:
    """DROP (terminating leftover sessions) and CREATE a benchmark database."""
    if not name.startswith("kodo_bench"):
        raise BenchError(f"refusing to recreate {name!r}: benchmark databases are named kodo_bench*")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def python() -> str:
    return sys.executable
