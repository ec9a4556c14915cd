"""The engine benchmark's printed report: the comparison table, the targets, per-system detail, the sweep."""

from __future__ import annotations

import argparse
import math
import os
import platform

from ops.bench.stats import Result


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
