"""`python -m ops.sbxperf [PREFIX ...]` (`ops/sbx-perf-report.sh`): sandbox task percentiles, from SQL.

The port of the runbooks' `scripts/sbx-perf-report.sh run_` (contract-internals §13; seed 000 L15:
"p95/p99 emitted from SQL metrics"). For the runs whose id starts with one of the PREFIXes (none:
every run; a whole run id is its own prefix) it prints two tables, both computed by Postgres
(`percentile_cont`, the named queries of `kodo/db/queries/perf.sql`):

1. the original's row over `app.sbx_runs` (every attempt, every err_code): Total Tasks, p50/p95/p99
   Wall (ms), p95 CPU (ms), Max Mem (MB), from each attempt's provider metrics (the mock sandbox
   reports 1 ms / 1 MB for each);
2. the engine's timings of the same tasks, the sbxQ children in `dbos.workflow_status` of every
   execution of those runs: queue wait (enqueued -> first claim), run (first claim -> end) and total
   (enqueued -> end), each n, p50, p95, p99 and max in ms; with the tasks' statuses and how many were
   taken over after a crash (recovery_attempts > 0).

It computes no pass or fail (exit 0; 1 when the database cannot be read; 2 on bad usage). `--json` prints the same numbers as one JSON
object. The database is the environment's (APP_DB_NAME, default app_local; KODO_DATABASE_URL wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import psycopg

from kodo.config import Settings
from kodo.db.pool import connect
from kodo.db.queries import Q

# The original's columns (contract-internals §13), in its order: (header, key of sbx_perf_attempts).
ATTEMPT_COLUMNS = (
    ("Total Tasks", "total_tasks"),
    ("p50 Wall (ms)", "p50_wall_ms"),
    ("p95 Wall (ms)", "p95_wall_ms"),
    ("p99 Wall (ms)", "p99_wall_ms"),
    ("p95 CPU (ms)", "p95_cpu_ms"),
    ("Max Mem (MB)", "max_mem_mb"),
)
TIMING_COLUMNS = (("n", "n"), ("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"), ("max", "max_ms"))


def _plain(value: Any) -> Any:
    """A value as JSON has it: Decimal -> float (NULL stays None)."""
    return float(value) if isinstance(value, Decimal) else value


@dataclass(frozen=True)
class PerfReport:
    prefixes: list[str]
    attempts: dict[str, Any]  # sbx_perf_attempts' one row
    timings: list[dict[str, Any]]  # sbx_perf_tasks' rows: queue wait, run, total
    tasks: int  # sbxQ children found
    statuses: dict[str, int]  # of those children
    recovered: int  # of those children, taken over after a crash

    def timing(self, metric_start: str) -> dict[str, Any]:
        """The timing row whose metric starts with `metric_start` (`queue wait`, `task run`, `task total`)."""
        return next(t for t in self.timings if str(t["metric"]).startswith(metric_start))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def read(database_url: str, prefixes: Sequence[str]) -> PerfReport:
    """Run both queries for the runs whose id starts with one of `prefixes` (empty: every run)."""
    wanted = list(prefixes) or [""]
    with connect(database_url) as c:
        attempts = c.execute(Q["sbx_perf_attempts"], {"prefixes": wanted}).fetchone() or {}
        rows = c.execute(Q["sbx_perf_tasks"], {"prefixes": wanted}).fetchall()
    first = rows[0] if rows else {}
    return PerfReport(
        prefixes=wanted,
        attempts={k: _plain(v) for k, v in attempts.items()},
        timings=[
            {k: _plain(row[k]) for k in ("metric", *(key for _, key in TIMING_COLUMNS))} for row in rows
        ],
        tasks=int(first.get("tasks") or 0),
        statuses={str(k): int(v) for k, v in (first.get("statuses") or {}).items()},
        recovered=int(first.get("recovered") or 0),
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], first_left: bool = False) -> str:
    """A psql-like table: ` a | b ` with a rule under the header; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if (i == 0 and first_left) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return " " + " | ".join(parts)

    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    return "\n".join([line(list(headers)), rule, *(line(r) for r in cells)])


def render(report: PerfReport, scope: str | None = None) -> str:
    """The report as text: a scope line (`scope`, or the prefixes) and the two tables."""
    scope = scope or (
        "every run"
        if report.prefixes == [""]
        else "runs starting with "
        + ", ".join(repr(p) for p in report.prefixes[:5])
        + (f" and {len(report.prefixes) - 5} more" if len(report.prefixes) > 5 else "")
    )
    a = report.attempts
    statuses = " ".join(f"{k}={v}" for k, v in sorted(report.statuses.items())) or "none"
    lines = [
        f"sbx perf report: {scope}",
        f"  runs with sandbox attempts: {a.get('runs', 0)}, tasks: {a.get('tasks', 0)}, "
        f"attempts: {a.get('total_tasks', 0)} (err_code other than NONE: {a.get('failed_attempts', 0)})",
        "",
        "Sandbox attempts (app.sbx_runs, every attempt; provider metrics):",
        table([h for h, _ in ATTEMPT_COLUMNS], [[a.get(k) for _, k in ATTEMPT_COLUMNS]]),
        "",
        f"Task timings in ms (dbos.workflow_status, sbxQ children: {report.tasks} tasks, {statuses}, "
        f"taken over after a crash: {report.recovered}):",
        table(
            ["metric", *(h for h, _ in TIMING_COLUMNS)],
            [[t["metric"], *(t[k] for _, k in TIMING_COLUMNS)] for t in report.timings],
            first_left=True,
        ),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ops/sbx-perf-report.sh",
        description="Sandbox task performance, computed in SQL (percentile_cont), for the runs whose id\n"
        "starts with a PREFIX:\n"
        "  - p50/p95/p99 wall time, p95 CPU and max memory of every sandbox attempt (app.sbx_runs;\n"
        "    the runbooks' scripts/sbx-perf-report.sh and its columns);\n"
        "  - n, p50/p95/p99 and max of the sbxQ tasks' queue wait (enqueued -> first claim), run\n"
        "    (first claim -> end) and total time, in ms (dbos.workflow_status).\n"
        "Reads the environment's database (APP_DB_NAME, default app_local). Computes no pass or fail.",
        epilog="examples:\n"
        "  ops/sbx-perf-report.sh run_                    every intent run (the runbooks' call)\n"
        "  ops/sbx-perf-report.sh run_0123456789abcdef    one run\n"
        "  ops/sbx-perf-report.sh --json run_a run_b      two runs, as JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prefixes",
        nargs="*",
        metavar="PREFIX",
        help="run id prefix (a whole run id is one run); several are added up; none: every run",
    )
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = read(Settings.from_env().database_url, args.prefixes)
    except psycopg.OperationalError as exc:
        print(f"sbx-perf-report: cannot read the database: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_json(), sort_keys=True))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
