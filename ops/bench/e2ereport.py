"""The end-to-end benchmark's printed report (`ops.bench.e2e`): one section per figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from ops.bench.report import _fmt

Json = dict[str, Any]
Print = Callable[[str], None]


def _ms(x: float | None) -> str:
    return "-" if x is None else f"+{x:.0f}"


def report(r: Json, out: TextIO) -> None:
    """The whole report of one result (`ops.bench.e2e.Bench.build`) to `out`."""

    def p(line: str = "") -> None:
        print(line, file=out)

    for section in (_header, _load, _cpu, _postgres, _memory, _profile):
        section(r, p)
    p("=" * 100)


def _header(r: Json, p: Print) -> None:
    c = r["config"]
    p("")
    p("=" * 100)
    p(
        f"E2E BENCHMARK: the monolith (ops/start.sh, supervisord over the Procfile) over HTTP; {c['cores']} cores,"
        f" Python {c['python']}, load average {c['load_average']:.1f}"
    )
    size = f"{c['runs']} runs" if c["runs"] is not None else f"runs started for {c['duration_s']:g}s"
    p(
        f"clients {c['clients']}, {size} (+{c['warmup']} warm-up), tenants {c['tenants']}, fan-out {c['fanout']}"
        f" sandbox task(s)/run, poll {c['poll_ms']:g} ms, approve {c['approve']}"
        + (f", env {' '.join(c['kodo_env'])}" if c["kodo_env"] else "")
    )
    p(f"postgres/redis: {c['backends']}")
    p(f"startup (ops/start.sh to every program serving): {r['startup_s']:.1f} s; logs {r['log_dir']}")


def _load(r: Json, p: Print) -> None:
    c = r["config"]
    p("-" * 100)
    p(
        f"throughput: {r['runs_per_s']:.2f} runs/s ({r['runs_succeeded']} succeeded of {r['runs_begun']} begun"
        f" in a {r['window_s']:.2f} s window)"
    )
    limits = r["queue_limits"]
    for q in limits["rows"]:
        p(
            f"  queue limits in force ({q['queue']}): "
            + ", ".join(f"{k} {v}" for k, v in q.items() if k != "queue")
        )
    if limits["cap_runs_per_s"] is not None:
        held = (
            "; THROUGHPUT IS HELD BY IT (raise it: --kodo-env SBX_QUEUE_RATE_LIMIT_PER_PERIOD=N, or more --tenants)"
            if limits["held"]
            else ""
        )
        p(f"  sbxQ's rate limits let at most {limits['cap_runs_per_s']:.2f} runs/s through{held}")
    p(f"latency start->terminal, ms {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for key, label in (("observed", f"observed (poll {c['poll_ms']:g} ms)"), ("server", "server-stamped")):
        d = r["latency_ms"][key]
        p(
            f"  {label:<25} {d['n']:>6} {_fmt(d['p50'], 0):>8} {_fmt(d['p95'], 0):>8}"
            f" {_fmt(d['p99'], 0):>8} {_fmt(d['max'], 0):>8}"
        )
    if r["errors"]:
        p(f"errors: {r['error_count']}")
        for kind, count in r["errors"].items():
            p(f"  {count:>6}  {kind}")
    else:
        p("errors: 0")
    p(f"HTTP requests, ms {'n':>18} {'p50':>8} {'p95':>8} {'p99':>8}")
    for route, d in r["requests_ms"].items():
        p(f"  {route:<30} {d['n']:>6} {_fmt(d['p50'], 1):>8} {_fmt(d['p95'], 1):>8} {_fmt(d['p99'], 1):>8}")
    if r["slowest"]:
        p("slowest runs (ms after the start request, from the rows' own timestamps):")
    for s in r["slowest"]:
        ops = ", ".join(f"{name.rsplit('.', 1)[-1]} {_ms(at)}" for name, at in s["ops"])
        p(
            f"  {s['run']} ({s['tenant']}) observed {s['observed_ms']:.0f}: row {_ms(s['created'])},"
            f" first claim {_ms(s['first_claim'])}; ops done: {ops}"
        )
        p(
            f"      {s['children']} sandbox child(ren): created {_ms(s['children_created'])}, last claimed"
            f" {_ms(s['children_last_claim'])}, last ended {_ms(s['children_last_end'])}; run {s['status']}"
            f" {_ms(s['ended'])}; recoveries {s['recoveries']}, no-op deliveries {s['noop_deliveries']}"
        )


def _cpu(r: Json, p: Print) -> None:
    p("-" * 100)
    p(
        "CPU ms per run by process group (/proc/<pid>/stat utime+stime of every process of the group and of"
        " the\n  children it reaped, window delta / runs succeeded); idle = ms of CPU per second before the load"
    )
    p(f"  {'group':<15} {'procs':>5} {'ms/run':>9} {'share':>6} {'idle ms/s':>10}")
    total = r["cpu_total_ms_per_run"]
    for g in r["cpu"]:
        share = "" if g["group"] == "profiler" else f"{100 * g['ms_per_run'] / total:5.1f}%" if total else ""
        p(
            f"  {g['group']:<15} {g['procs']:>5} {g['ms_per_run']:>9.2f} {share:>6} {g['idle_ms_per_s']:>10.1f}"
        )
    p(f"  {'total':<15} {'':>5} {total:>9.2f}")
    m = r["machine"]
    p(
        f"  machine in the window: {m['busy_pct']:.0f}% busy of {m['capacity_s']:.1f} CPU-s; not in any group"
        f" (other users) {m['other_s']:.1f} s, hypervisor steal {m['steal_s']:.1f} s"
    )


def _postgres(r: Json, p: Print) -> None:
    p("-" * 100)
    pg = r["postgres"]
    p(
        f"Postgres ({pg['database']}): {pg['commits_per_run']:.1f} commits/run (xact_commit +{pg['commits']},"
        f" rollbacks +{pg['rollbacks']})"
    )
    if pg["statements_per_run"] is None:
        p(f"  statements: pg_stat_statements not available ({pg['statements_note']})")
    else:
        p(
            f"  {pg['statements_per_run']:.1f} statements/run (pg_stat_statements calls +{pg['statements']}; of"
            f" them BEGIN {pg['begin_per_run']:.1f}/run, COMMIT {pg['commit_statements_per_run']:.1f}/run);"
            f" idle: {pg['idle_statements_per_s']:.1f} statements/s"
        )
        p(
            f"  top {len(pg['top'])} statements by calls: {'calls/run':>9} {'mean ms':>8} {'rows/run':>8}  query"
        )
        for s in pg["top"]:
            q = s["query"] if len(s["query"]) <= 110 else s["query"][:107] + "..."
            p(f"  {s['calls_per_run']:>46.2f} {s['mean_ms']:>8.3f} {s['rows_per_run']:>8.2f}  {q}")


def _memory(r: Json, p: Print) -> None:
    p("-" * 100)
    p(
        "memory by process group, MiB (Pss from /proc/<pid>/smaps_rollup; Rss), at idle before the load and at the end"
    )
    p(f"  {'group':<15} {'procs':>5} {'PSS idle':>9} {'PSS end':>9} {'RSS idle':>9} {'RSS end':>9}")
    for g in r["memory"]:
        p(
            f"  {g['group']:<15} {g['procs_end']:>5} {g['pss_idle_mb']:>9.1f} {g['pss_end_mb']:>9.1f}"
            f" {g['rss_idle_mb']:>9.1f} {g['rss_end_mb']:>9.1f}"
        )
    tot = {
        k: sum(g[k] for g in r["memory"]) for k in ("pss_idle_mb", "pss_end_mb", "rss_idle_mb", "rss_end_mb")
    }
    p(
        f"  {'total':<15} {'':>5} {tot['pss_idle_mb']:>9.1f} {tot['pss_end_mb']:>9.1f}"
        f" {tot['rss_idle_mb']:>9.1f} {tot['rss_end_mb']:>9.1f}"
    )


def _profile(r: Json, p: Print) -> None:
    if r["profile"] is not None:
        p("-" * 100)
        p(f"profile ({r['profile']['tool']}): {r['profile']['dir']}")
        for entry in r["profile"]["lines"]:
            p(f"  {entry}")
