"""`mise run bench:e2e` (`python -m ops.bench.e2e`) at a tiny size: 2 clients, 6 runs.

The benchmark starts the monolith itself (ops/start.sh under supervisord, on free ports, with private
Postgres and Redis servers), so this test needs no fixture: it runs the command, reads its JSON
(stdout) and its report (stderr), and checks that every figure is there and plausible, that the six
runs succeeded with no error, and that nothing of the stack outlives the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops import processes
from ops.bench.monolith import GROUPS
from ops.bench.profiling import summarize_folded

RUNS = 6
LABELS = (
    "throughput:",
    "runs/s",
    "latency start->terminal",
    "observed (poll 250 ms)",
    "server-stamped",
    "errors: 0",
    "HTTP requests",
    "slowest runs",
    "CPU ms per run by process group",
    "commits/run",
    "statements/run",
    "statements by calls",
    "memory by process group",
    "PSS idle",
    "RSS end",
)


@pytest.mark.timeout(300)
def test_bench_e2e_prints_every_figure_and_its_runs_succeed(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "ops.bench.e2e", "--clients", "2", "--runs", str(RUNS), "--warmup", "2"]
    argv += ["--idle-s", "1", "--json", "--log-dir", str(tmp_path)]
    done = subprocess.run(argv, cwd=processes.REPO, capture_output=True, text=True, timeout=280, check=False)
    text = done.stderr
    assert done.returncode == 0, text[-6000:]
    result = json.loads(done.stdout)

    for label in LABELS:
        assert label in text, f"{label!r} missing from the report:\n{text}"
    for group in (*GROUPS, "client"):
        assert f"\n  {group} " in text, f"group {group!r} missing from the report:\n{text}"

    assert result["runs_begun"] == RUNS
    assert result["runs_succeeded"] == RUNS
    assert result["error_count"] == 0 and result["errors"] == {}
    assert result["runs_per_s"] > 0
    for kind in ("observed", "server"):
        lat = result["latency_ms"][kind]
        assert lat["n"] == RUNS
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
    assert set(result["requests_ms"]) == {
        "POST /intents",
        "POST /intents/:id/run",
        "POST /runs/:id/approve-plan",
        "GET /runs/:id",
    }

    cpu = {g["group"]: g for g in result["cpu"]}
    assert set(cpu) == {*GROUPS, "client"}
    for group in ("api", "intent worker", "sbx worker", "postgres"):
        assert cpu[group]["procs"] >= 1, cpu[group]
    for group in ("api", "intent worker", "postgres"):
        assert cpu[group]["ms_per_run"] > 0, cpu[group]
    assert cpu["api"]["procs"] == 3  # the gunicorn master and its two workers
    # main process + pool children: intentQ's pool is the CPU count by default; sbxQ's pool is
    # threads (KODO_SBX_POOL), its 4 slots in the one process
    assert cpu["intent worker"]["procs"] == 1 + (os.cpu_count() or 1)
    assert cpu["sbx worker"]["procs"] == 1

    pg = result["postgres"]
    assert pg["commits"] > 0 and pg["commits_per_run"] > 0
    assert pg["statements_note"] is None  # the private cluster preloads pg_stat_statements
    assert pg["statements_per_run"] > 0
    assert 1 <= len(pg["top"]) <= 10
    assert all(s["calls_per_run"] > 0 and s["query"] for s in pg["top"])

    memory = {g["group"]: g for g in result["memory"]}
    assert set(memory) == {*GROUPS, "client"}
    for g in memory.values():
        assert g["pss_idle_mb"] > 0 and g["pss_end_mb"] > 0 and g["rss_end_mb"] >= g["pss_end_mb"], g

    assert processes.pids_with_env("KODO_RUN_DIR", str(tmp_path / "run")) == []


def test_folded_stacks_summary() -> None:
    folded = 'process 1:"x";main (a.py:1);f (a.py:2) 3\nprocess 1:"x";main (a.py:1);g (a.py:5) 1\n'
    table, samples = summarize_folded(folded)
    assert samples == 4
    lines = table.splitlines()
    assert lines[3].split() == ["75.0", "75.0", "f", "(a.py:2)"]
    assert "100.0  main (a.py:1)" in table
