"""The engine benchmark's measurement: warm-up, throughput rounds with CPU accounting, latency run.

Used by `ops.bench.systems` (kodo, raw Celery) and by the DBOS driver subprocess (`ops.bench.dbos_app`),
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

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ops import processes
from ops.bench import BenchError, log
from ops.bench.probes import Probe
from ops.bench.stats import Dist, Result

StartFn = Callable[[str], None]


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
    stat0, wall0 = processes.cpu_idle_steal(), time.monotonic()
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
    steal = processes.cpu_idle_steal()[1] - stat0[1]
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


class CpuMeter:
    """CPU seconds used per process group (by category) between `begin()` and `end()`."""

    def __init__(self, groups: dict[str, Callable[[int, int, str], bool]]) -> None:
        self.groups = groups
        self._before: dict[int, tuple[str, int, float]] = {}
        self._stat = (0.0, 0.0)
        self._t0 = 0.0

    def begin(self) -> None:
        self._before = processes.cpu_by_process()
        self._stat = processes.cpu_idle_steal()
        self._t0 = time.monotonic()

    def end(self) -> list[tuple[str, float]]:
        after = processes.cpu_by_process()
        idle, steal = (b - a for a, b in zip(self._stat, processes.cpu_idle_steal(), strict=True))
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


def standard_cpu_groups(worker_pgids: set[int]) -> dict[str, Callable[[int, int, str], bool]]:
    me = os.getpid()
    return {
        "workers": lambda pid, pgid, comm: pgid in worker_pgids,
        "benchmark driver": lambda pid, pgid, comm: pid == me,
        "postgres": lambda pid, pgid, comm: comm.startswith("postgres"),
        "redis": lambda pid, pgid, comm: comm.startswith("redis"),
    }
