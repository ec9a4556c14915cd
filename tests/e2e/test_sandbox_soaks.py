"""The sandbox soaks (`mise run sandbox:soak`, `sandbox:fanout:soak`: `python -m ops.sbxsoak`) at CI size,
and the perf report (`mise run sbx:perf:report`: `ops/sbx-perf-report.sh`).

Each test runs the task's command from mise.toml as a real subprocess against the test database and broker
(tests/conftest.py BASE_ENV), on free ports: it starts the real API, intent worker, sbx worker and
reconciler itself (`ops.procfile.Stack`), and the fan-out soak stops its real sbx worker (kill -9 of
the process group, or SIGTERM then kill -9 after 2 s) in the middle of the fan-out and starts another.
The command must exit 0 and report every oracle at its value; the rows are then read back from the
database, independently of the script's report, with the exact counts the soak sizes imply.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from ops import processes
from ops.sbxsoak import PARTITION
from tests.support import procs
from tests.support.intent import Sql

TOTAL = 8  # sandbox:soak runs (100 at full size)
TASKS = 20  # sandbox:fanout:soak tasks (100 at full size)
KILL_AT = 5
CHAOS_SLEEP_MS = 300  # the first sbx worker's tasks sleep this long: the stop finds them in flight
SOAK_TIMEOUT_S = 150


def task_argv(task: str, *args: str) -> list[str]:
    """What `mise run TASK ARGS` runs (mise.toml's command, the arguments appended), from the repo."""
    tasks = tomllib.loads((processes.REPO / "mise.toml").read_text())["tasks"]
    return [*shlex.split(tasks[task]["run"]), *args]


def run_task(task: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        task_argv(task, *args),
        cwd=processes.REPO,
        env=processes.child_env(os.environ),  # APP_DB_NAME / broker of the test run (conftest)
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_soak(task: str, *args: str) -> tuple[str, dict[str, str]]:
    """`mise run TASK ARGS` on free ports: its output, and its summary line's values."""
    port, admin_port = processes.free_port(), processes.free_port()
    while admin_port == port:
        admin_port = processes.free_port()
    done = run_task(task, *args, "--port", str(port), "--admin-port", str(admin_port), timeout=SOAK_TIMEOUT_S)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    [summary] = [ln for ln in done.stdout.splitlines() if ln.startswith("summary: ")]
    assert summary.endswith(" -> PASS"), out
    values = dict(w.split("=", 1) for w in summary.removeprefix("summary: ").split(" -> ")[0].split())
    return out, values


def app_version(out: str) -> str:
    found = re.search(r"app version (\S+),", out)
    assert found is not None, out
    return found.group(1)


def assert_attempts_table(out: str, attempts: int) -> None:
    """The original's perf row: Total Tasks and the mock provider's 1 ms / 1 MB everywhere."""
    assert " Total Tasks | p50 Wall (ms) | p95 Wall (ms) | p99 Wall (ms) | p95 CPU (ms) | Max Mem (MB)" in out
    assert re.search(rf"^ +{attempts} \|( +1\.00 \|){{4}} +1\.00$", out, re.MULTILINE), out
    for metric in ("queue wait", "task run", "task total"):
        assert re.search(rf"^ {metric} .*\| +{attempts} \|", out, re.MULTILINE), out


def test_sandbox_soak_every_run_succeeds_once(sql: Sql) -> None:
    out, summary = run_soak("sandbox:soak", "--total", str(TOTAL))
    for key, want in {
        "runs": TOTAL, "succeeded": TOTAL, "http_succeeded": TOTAL, "receipts": TOTAL, "dup_receipts": 0,
        "sbx_runs": TOTAL, "dup_sbx": 0, "runs_failing_oracles": 0, "global_dup_receipts": 0,
        "dup_task_keys": 0, "dup_artifacts": 0,
    }.items():  # fmt: skip
        assert summary[key] == str(want), (key, out)
    assert_attempts_table(out, TOTAL)

    # The database, read without the script: the runs of its application version.
    runs = sql(
        "SELECT r.id, r.status, r.queue_partition_key, i.goal, i.payload FROM app.runs r "
        "JOIN app.intents i ON i.id = r.intent_id "
        "JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_id AND w.application_version = %s",
        (app_version(out),),
    )
    assert len(runs) == TOTAL, out
    assert {(r["status"], r["queue_partition_key"], r["goal"]) for r in runs} == {
        ("succeeded", PARTITION, "sleep 1")
    }
    assert sorted(r["payload"]["inputs"]["n"] for r in runs) == list(range(TOTAL))
    run_ids = [r["id"] for r in runs]
    receipts = sql("SELECT run_id, seen_count FROM app.mock_receipts WHERE run_id = ANY(%s)", (run_ids,))
    assert sorted(r["run_id"] for r in receipts) == sorted(run_ids)
    assert {r["seen_count"] for r in receipts} == {1}
    sbx = sql(
        "SELECT run_id, task_key, attempt, err_code FROM app.sbx_runs WHERE run_id = ANY(%s)", (run_ids,)
    )
    assert sorted(r["run_id"] for r in sbx) == sorted(run_ids)  # one sandbox task per "sleep 1" run
    assert {(r["attempt"], r["err_code"]) for r in sbx} == {(1, "NONE")}
    kids = sql(
        "SELECT status, queue_partition_key FROM dbos.workflow_status "
        "WHERE queue_name = 'sbxQ' AND parent_workflow_id IN (SELECT workflow_id FROM app.runs WHERE id = ANY(%s))",
        (run_ids,),
    )
    assert [(k["status"], k["queue_partition_key"]) for k in kids] == [("SUCCESS", PARTITION)] * TOTAL

    # The perf report of those runs: `mise run sbx:perf:report --json RUN_ID...` (ops/sbx-perf-report.sh).
    done = run_task("sbx:perf:report", "--json", *run_ids)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    attempts = report["attempts"]
    assert (attempts["total_tasks"], attempts["tasks"], attempts["runs"], attempts["failed_attempts"]) == (
        TOTAL, TOTAL, TOTAL, 0,
    )  # fmt: skip
    assert attempts["p50_wall_ms"] == attempts["p99_wall_ms"] == attempts["max_mem_mb"] == 1.0
    assert (report["tasks"], report["statuses"], report["recovered"]) == (TOTAL, {"SUCCESS": TOTAL}, 0)
    timings = {t["metric"].split(" (")[0]: t for t in report["timings"]}
    assert list(timings) == ["queue wait", "task run", "task total"]
    assert [t["n"] for t in timings.values()] == [TOTAL] * 3
    for t in timings.values():
        assert 0 <= t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"] <= t["max_ms"], t
    assert timings["task total"]["max_ms"] >= timings["queue wait"]["max_ms"]
    # Every run of the database (the runbooks' `sbx-perf-report.sh run_`) holds at least these.
    everything = run_task("sbx:perf:report", "run_")
    assert everything.returncode == 0, everything.stderr
    assert "sbx perf report: runs starting with 'run_'" in everything.stdout
    row = re.search(r"^ +(\d+) \|( +[-\d.]+ \|){4} +[-\d.]+$", everything.stdout, re.MULTILINE)
    assert row is not None and int(row.group(1)) >= TOTAL, everything.stdout
    helped = run_task("sbx:perf:report", "--help")
    assert (
        helped.returncode == 0 and "usage: ops/sbx-perf-report.sh [-h] [--json] [PREFIX ...]" in helped.stdout
    )


@pytest.mark.chaos
@pytest.mark.parametrize("stop", ["kill", "term"])
def test_fanout_soak_survives_the_sbx_worker_stopped_mid_fanout(sql: Sql, stop: str) -> None:
    out, summary = run_soak(
        "sandbox:fanout:soak", "--tasks", str(TASKS), "--kill-at", str(KILL_AT), "--stop", stop,
        "--chaos-sleep-ms", str(CHAOS_SLEEP_MS),
    )  # fmt: skip
    for key, want in {
        "tasks": TASKS, "stop": stop, "status": "succeeded", "CompileST": "a1", "ApplyPatchST": "a1",
        "DecideST": "a1", "ExecuteST": "a1", "receipts": 1, "dup_receipts": 0, "sbx_runs": TASKS,
        "dup_sbx": 0, "dup_task_keys": 0, "dup_artifacts": 0, "global_dup_receipts": 0, "workflow": "SUCCESS",
    }.items():  # fmt: skip
        assert summary[key] == str(want), (key, out)
    # The stop landed in the fan-out, with tasks in flight in the stopped worker and tasks left over,
    # which the new worker ran.
    at_stop, after = int(summary["at_stop_sbx_runs"]), int(summary["sbx_runs_after_restart"])
    assert KILL_AT <= at_stop < TASKS, out
    assert int(summary["at_stop_held"]) >= 1, out
    assert 1 <= after <= TASKS - at_stop, out
    stopped = re.fullmatch(r"pid=(\d+),rc=(-?\d+)", summary["stopped"])
    assert stopped is not None, out
    assert not processes.pid_alive(int(stopped.group(1))), out
    if stop == "kill":
        assert stopped.group(2) == "-9", out
        assert " stopped (kill -9, exit -9) " in out, out
        assert int(summary["children_recovered"]) >= 1, out  # the killed worker's tasks were taken over
    else:
        assert re.search(
            r" stopped \(SIGTERM, (kill -9 after 2s|exited by itself in [\d.]+s), exit -?\d+\) ", out
        )
    assert_attempts_table(out, TASKS)

    # The database, read without the script.
    run_id = summary["run"]
    [run] = sql("SELECT status, workflow_id, queue_partition_key FROM app.runs WHERE id = %s", (run_id,))
    assert (run["status"], run["queue_partition_key"]) == ("succeeded", PARTITION)
    # The fan-out came from the OpenCode stand-in's answers (OC_MODE=live, strict): one call per step.
    calls = sql("SELECT step_id, error FROM app.opencode_calls WHERE run_id = %s ORDER BY step_id", (run_id,))
    assert [(c["step_id"], c["error"]) for c in calls] == [("CompileST", None), ("DecideST", None)]
    sbx = sql("SELECT task_key, attempt, err_code, request FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    assert len(sbx) == TASKS and len({r["task_key"] for r in sbx}) == TASKS
    assert {(r["attempt"], r["err_code"]) for r in sbx} == {(1, "NONE")}
    assert sorted(r["request"]["cmd"] for r in sbx) == sorted(
        f"echo running test{i}.ts" for i in range(TASKS)
    )
    assert (
        sql(
            "SELECT task_key FROM app.sbx_runs WHERE run_id = %s GROUP BY task_key HAVING count(*) > 1",
            (run_id,),
        )
        == []
    )
    # Each task's output stream (one attempt each) was closed once, also those the stop interrupted.
    closes = sql(
        "SELECT n.destination_uuid, count(*) AS n FROM dbos.notifications n"
        " WHERE n.topic = 'stream_closed' AND n.destination_uuid IN"
        " (SELECT task_key FROM app.sbx_runs WHERE run_id = %s) GROUP BY 1",
        (run_id,),
    )
    assert len(closes) == TASKS and {c["n"] for c in closes} == {1}, closes
    assert sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,)) == [{"seen_count": 1}]
    assert (
        sql(
            "SELECT 1 FROM app.artifacts WHERE run_id = %s "
            "GROUP BY run_id, step_id, task_key, idx, attempt HAVING count(*) > 1",
            (run_id,),
        )
        == []
    )
    sets = sql(
        "SELECT task_key, array_agg(DISTINCT attempt) AS attempts FROM app.artifacts "
        "WHERE run_id = %s AND step_id = 'ExecuteST' GROUP BY task_key",
        (run_id,),
    )
    assert sorted(s["task_key"] for s in sets) == sorted(r["task_key"] for r in sbx)
    assert {tuple(s["attempts"]) for s in sets} == {(1,)}  # no task's artifacts written by a second attempt
    kids: list[dict[str, Any]] = sql(
        "SELECT status, queue_partition_key, recovery_attempts FROM dbos.workflow_status "
        "WHERE parent_workflow_id = %s AND queue_name = 'sbxQ'",
        (run["workflow_id"],),
    )
    assert [(k["status"], k["queue_partition_key"]) for k in kids] == [("SUCCESS", PARTITION)] * TASKS
    recovered = sum(1 for k in kids if k["recovery_attempts"] > 0)
    assert recovered == int(summary["children_recovered"])


def test_a_soak_beside_other_workers_on_its_broker_moves_to_an_idle_one(
    start_worker: Callable[..., procs.WorkerProc],
) -> None:
    # Workers of another app version on the soak's broker (a running `mise run start`) would take its
    # deliveries and drop them as no-ops: the soak moves to an idle Redis db (no consumer, no message), says
    # so, and passes.
    start_worker(name="squatter", queues="sbxQ", concurrency=1)
    out, summary = run_soak(
        "sandbox:fanout:soak",
        "--tasks",
        "8",
        "--kill-at",
        "1",
        "--stop",
        "kill",
        "--chaos-sleep-ms",
        str(CHAOS_SLEEP_MS),
    )  # fmt: skip  (more tasks than the sbx worker's 4 slots: a held task is still asleep at the stop)
    moved = re.search(r"workers already consume (\S+) \(([^)]*)\): this proof uses the idle (\S+)", out)
    assert moved is not None, out
    assert moved.group(1) == os.environ["KODO_BROKER_URL"] and "squatter@" in moved.group(2), out
    assert moved.group(3) != moved.group(1), out
    assert f"broker {moved.group(3)}," in out, out  # the soak's stack ran on it
    assert summary["status"] == "succeeded" and summary["dup_receipts"] == "0", out
