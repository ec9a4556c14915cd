"""`python -m ops.sbxsoak parallel|fanout`: the sandbox soaks (`mise run sandbox:soak`, `sandbox:fanout:soak`).

Ports of the original's `scripts/sandbox-parallel-soak.sh` and `scripts/sandbox-fanout-soak.sh`
(contract-internals §8; seed 000 L08 and L15, seed 001/004 signoff). Each starts the `Procfile`'s
reconciler + admin server, API, intent worker (`-Q intentQ,controlQ`) and sbx worker (`-Q sbxQ`)
through `ops.procfile.Stack`, under an application version of its own, against the database of the
environment (APP_DB_NAME, default app_local; migrated first), drives runs over HTTP in partition
`soak-partition`, checks the oracles in SQL and prints the sandbox perf report of its runs
(`ops.sbxperf`, what `ops/sbx-perf-report.sh` prints). The processes get this process's environment
(so any KODO_*, SBX_* or OC_* setting reaches them) with the soak's own values on top.

`parallel` (sandbox:soak; `--total`, default env TOTAL or 100; OC_MODE=replay SBX_MODE=mock):

1. for each of the runs: POST /intents `{"goal":"sleep 1","inputs":{"n":i},"constraints":{}}` (the
   API requires `constraints`), POST
   /intents/:id/run `{queuePartitionKey:"soak-partition", workload:{concurrency:10, steps:8,
   sandboxMinutes:5}}` and, at once, POST /runs/:id/approve-plan;
2. polls the runs every second (`--timeout`, 240 s, the original's 240 ticks); a run `failed`,
   `retries_exceeded` or `canceled` ends the soak at once;
3. requires every run `succeeded` (also as GET /runs/:id answers it) and, per run, the intent
   chaos oracles (`ops.intentoracles`): CompileST/ApplyPatchST/DecideST/ExecuteST one row each,
   attempt 1; one receipt, seen_count 1; one sandbox run per task (a "sleep 1" run has one: the
   replay decision has no tests, so one task runs its command), attempt 1, err_code NONE; the
   parent and its child SUCCESS. Then the runbooks' global check: no `app.mock_receipts` row
   anywhere with seen_count > 1; and over the soak's runs no task key in app.sbx_runs twice and no
   artifact twice by its full key (run, step, task, idx, attempt). The original polled GET /runs/:id
   for each run every second; this polls app.runs in one query and asks GET /runs/:id once at the
   end. Its perf report covered `run_` (every run in the database); this one covers the soak's runs
   (`ops/sbx-perf-report.sh run_` still gives the original's).

`fanout` (sandbox:fanout:soak; `--tasks`, default 100):

1. starts kodo's OpenCode stand-in (`ops.ocmock`, in this process, on a free port) and pushes the
   original's two answers: a plan (tests `["test0.ts"]`) and a build decision with the tests
   `test0.ts` ... `test<N-1>.ts` and `test_command: "echo running"`; the processes run with
   OC_MODE=live against it, OC_STRICT_MODE=1 (a failed call fails the run instead of falling back
   to the replay producer, whose one task would hide it) and SBX_MODE=mock;
2. POST /intents "fanout N tasks", POST /intents/:id/run (partition `soak-partition`, workload
   {10,1,5}), waits <= 30 s for `waiting_input`, approves;
3. once `--kill-at` (10) app.sbx_runs rows exist (<= 30 s), stops the sbx worker: `--stop term`
   (the original's: SIGTERM to its process group, kill -9 after 2 s) or `--stop kill` (kill -9 of
   the group at once), and starts a new one (`--chaos-sleep-ms` slows each sandbox attempt of the
   first worker only, so the stop lands with tasks in flight);
4. polls GET /runs/:id for `succeeded` (`--timeout`, 120 s);
5. oracles: the intent chaos oracles for N tasks (exactly N app.sbx_runs rows for N task keys,
   attempt 1, err_code NONE; one receipt, seen_count 1; Compile/ApplyPatch/Decide attempt 1; every
   child SUCCESS), `GROUP BY task_key HAVING count(*) > 1` empty, no artifact twice by its full key,
   no receipt anywhere with seen_count > 1, and the stop landed while tasks were left (fewer than N
   sandbox runs recorded at the stop).

Queue admission: sbxQ admits at most SBX_QUEUE_RATE_LIMIT_PER_PERIOD (100) tasks per
SBX_QUEUE_RATE_LIMIT_PERIOD_SEC (60 s) per partition. Both soaks put 100 tasks in one partition (a
"sleep 1" run fans out to one task), so one soak alone sits at the limit and a second within the
minute (or the other soak) would wait for the window. Like the original's mise environment, the
soaks give their processes SBX_QUEUE_RATE_LIMIT_PER_PERIOD=10000 unless it is set: set it to soak
under the default limit. The reconcilers write the limits they start with to dbos.queue_limits
(unless an operator set the queue), so the value stays there until another reconciler starts.

Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage, 130 when interrupted. Every
process is stopped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kodo.config import Settings
from ops import ocmock, processes, sbxperf, soak
from ops.http_client import http_json, poll_json
from ops.intentchaos import executor_pid
from ops.intentoracles import IntentRunSql
from ops.procfile import Stack

PARTITION = "soak-partition"
PROCESSES = ("reconciler", "api", "intent", "sbx")
FAILED = ("failed", "retries_exceeded", "canceled")
RATE_VAR = "SBX_QUEUE_RATE_LIMIT_PER_PERIOD"
SOAK_RATE = "10000"  # the original's mise value at HEAD
TASKS_PER_SLEEP_RUN = 1  # replay decision without tests: one task running its command

PARALLEL_GOAL = "sleep 1"
PARALLEL_WORKLOAD = {"concurrency": 10, "steps": 8, "sandboxMinutes": 5}
PARALLEL_TIMEOUT_S = 240.0  # the original's 240 one-second ticks
FANOUT_WORKLOAD = {"concurrency": 10, "steps": 1, "sandboxMinutes": 5}
FANOUT_TIMEOUT_S = 120.0
WAITING_INPUT_TIMEOUT_S = 30.0
KILL_POINT_TIMEOUT_S = 30.0
TERM_GRACE_S = 2.0  # SIGTERM, then kill -9 after this
MAX_TESTS = 100  # the build decision's schema (kodo.intent.planner: tests max_length)

say = soak.progress("sbxsoak")


# ---- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.sbxsoak",
        description="The sandbox soaks: `parallel` (mise run sandbox:soak) runs many approved "
        "'sleep 1' runs in one partition; `fanout` (mise run sandbox:fanout:soak) runs one run of N "
        "sandbox tasks and restarts the sbx worker in the middle. Both check that every run "
        "succeeded with nothing done twice, then print the sandbox perf report of their runs.",
    )
    sub = p.add_subparsers(dest="soak", required=True, metavar="{parallel,fanout}")
    par = sub.add_parser(
        "parallel",
        help="many runs at once (sandbox:soak)",
        description="TOTAL runs of the intent {goal: 'sleep 1', inputs: {n: i}}, each started in partition "
        f"{PARTITION} with workload {{10,8,5}} and approved at once; all must succeed, with one receipt "
        "(seen_count 1) and one sandbox run each, and no receipt anywhere seen twice. Sets "
        f"{RATE_VAR}={SOAK_RATE} for its processes unless set.",
    )
    par.add_argument(
        "--total",
        type=int,
        default=soak.env_int("TOTAL", 100),
        help="number of runs (default: env TOTAL or 100)",
    )
    par.add_argument(
        "--timeout",
        type=float,
        default=PARALLEL_TIMEOUT_S,
        help=f"seconds to wait for every run to end (default {PARALLEL_TIMEOUT_S:g})",
    )
    _common(par, port=3021, admin_port=3022)
    fan = sub.add_parser(
        "fanout",
        help="one run of N sandbox tasks, sbx worker restarted mid-way (sandbox:fanout:soak)",
        description="One run whose build decision (from kodo's OpenCode stand-in, OC_MODE=live) has N "
        f"tests, so N sandbox tasks, in partition {PARTITION}; once --kill-at of them ran, the sbx worker "
        "is stopped (SIGTERM then kill -9 after 2 s, or kill -9) and started again; the run must "
        "succeed with exactly one sandbox run per task, one receipt (seen_count 1), no artifact twice. "
        f"Sets {RATE_VAR}={SOAK_RATE} for its processes unless set.",
    )
    fan.add_argument(
        "--tasks",
        type=int,
        default=100,
        help=f"sandbox tasks of the run: tests of the build decision (default 100, at most {MAX_TESTS})",
    )
    fan.add_argument(
        "--kill-at",
        type=int,
        default=10,
        help="stop the sbx worker once this many sandbox runs are recorded (default 10)",
    )
    fan.add_argument(
        "--stop",
        choices=("term", "kill"),
        default="term",
        help="term: SIGTERM to the sbx worker's process group, kill -9 after 2 s (the original's); "
        "kill: kill -9 at once (default: term)",
    )
    fan.add_argument(
        "--chaos-sleep-ms",
        type=int,
        default=0,
        help="CHAOS_SLEEP_EXECUTE of the first sbx worker: each sandbox attempt sleeps this long first, "
        "so the stop finds tasks in flight (default 0, the original's)",
    )
    fan.add_argument(
        "--timeout",
        type=float,
        default=FANOUT_TIMEOUT_S,
        help=f"seconds to wait for succeeded after the restart (default {FANOUT_TIMEOUT_S:g})",
    )
    _common(fan, port=3023, admin_port=3024)
    return p


def _common(p: argparse.ArgumentParser, *, port: int, admin_port: int) -> None:
    p.add_argument(
        "--port", type=int, default=soak.env_int("PORT", port), help=f"API port (default env PORT or {port})"
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=soak.env_int("ADMIN_PORT", admin_port),
        help=f"admin/reconciler port (default env ADMIN_PORT or {admin_port})",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="where process logs go (default: a temp dir)")


def usage_problem(args: argparse.Namespace) -> str | None:
    if args.port == args.admin_port:
        return "--port and --admin-port must differ"
    if args.timeout <= 0:
        return "--timeout must be > 0"
    if args.soak == "parallel" and args.total < 1:
        return "--total must be >= 1"
    if args.soak == "fanout":
        if not 1 <= args.tasks <= MAX_TESTS:
            return f"--tasks must be 1..{MAX_TESTS} (the build decision's tests)"
        if not 1 <= args.kill_at < args.tasks:
            return "--kill-at must be >= 1 and below --tasks (the stop must leave tasks to run)"
        if args.chaos_sleep_ms < 0:
            return "--chaos-sleep-ms must be >= 0"
    for port in (args.port, args.admin_port):
        if not processes.port_free(port):
            return f"port {port} is in use; pick another with --port/--admin-port"
    return None


# ---- the shared part: processes, HTTP, SQL ------------------------------------------------------


@dataclass
class Outcome:
    """What a soak found: the values it prints and the failures (none: PASS)."""

    checks: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def line(self, kind: str) -> str:
        values = " ".join(f"{k}={v}" for k, v in self.checks.items())
        verdict = "PASS" if not self.failures else "FAIL (" + "; ".join(self.failures[:10]) + ")"
        return f"summary: soak={kind} {values} -> {verdict}"


class Soak(IntentRunSql):
    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], settings: Settings, log_dir: Path
    ) -> None:
        super().__init__(settings)
        self.args = args
        self.env = env
        self.stack = Stack(env, args.port, args.admin_port, log_dir, args.soak, say)

    def post(self, path: str, body: Any, want: int) -> dict[str, Any]:
        status, answer = http_json("POST", f"{self.stack.api_url}{path}", 10.0, body)
        if status != want or not isinstance(answer, dict):
            raise RuntimeError(f"POST {path} answered {status} {answer}")
        return answer

    def status(self, run_id: str) -> str:
        status, body = http_json("GET", f"{self.stack.api_url}/runs/{run_id}", 10.0)
        return str(body.get("status")) if status == 200 and isinstance(body, dict) else f"HTTP {status}"

    def start_run(self, intent: dict[str, Any], workload: dict[str, int]) -> tuple[str, str]:
        """POST /intents, then POST /intents/:id/run in the soak partition: (run id, workflow id)."""
        intent_id = str(self.post("/intents", intent, 201)["intentId"])
        body = {"queuePartitionKey": PARTITION, "workload": workload}
        started = self.post(f"/intents/{intent_id}/run", body, 202)
        return str(started["runId"]), str(started.get("workflowId") or intent_id)

    def approve(self, run_id: str) -> None:
        self.post(f"/runs/{run_id}/approve-plan", {"approvedBy": f"sandbox-{self.args.soak}-soak"}, 202)

    def duplicates(self, run_ids: list[str], out: Outcome) -> None:
        """The runbooks' duplicate queries: receipts seen twice anywhere (seed 000 L08/L15/L17), and
        over these runs task keys with two sandbox runs (L08) and artifacts twice by full key."""
        global_dups = self.count("SELECT count(*) FROM app.mock_receipts WHERE seen_count > 1", ())
        dup_keys = self.count(
            "SELECT count(*) FROM (SELECT task_key FROM app.sbx_runs WHERE run_id = ANY(%s) "
            "GROUP BY task_key HAVING count(*) > 1) d",
            (run_ids,),
        )
        dup_artifacts = self.count(
            "SELECT count(*) FROM (SELECT 1 FROM app.artifacts WHERE run_id = ANY(%s) "
            "GROUP BY run_id, step_id, task_key, idx, attempt HAVING count(*) > 1) d",
            (run_ids,),
        )
        out.checks.update(
            global_dup_receipts=str(global_dups),
            dup_task_keys=str(dup_keys),
            dup_artifacts=str(dup_artifacts),
        )
        if global_dups:
            out.fail(f"{global_dups} app.mock_receipts row(s) with seen_count > 1 in the database")
        if dup_keys:
            out.fail(f"{dup_keys} task key(s) with more than one app.sbx_runs row")
        if dup_artifacts:
            out.fail(f"{dup_artifacts} artifact key(s) (run, step, task, idx, attempt) written twice")

    def report(self, run_ids: list[str]) -> None:
        """The perf report of the soak's runs (`ops/sbx-perf-report.sh RUN_ID ...`)."""
        scope = f"the {len(run_ids)} runs of this soak" if len(run_ids) > 1 else f"run {run_ids[0]}"
        print(sbxperf.render(sbxperf.read(self.settings.database_url, run_ids), scope), flush=True)


# ---- sandbox:soak -----------------------------------------------------------------------------


def run_parallel(s: Soak, out: Outcome) -> None:
    total: int = s.args.total
    runs: dict[str, str] = {}  # run id -> workflow id
    t0 = time.monotonic()
    for i in range(total):
        run_id, workflow_id = s.start_run(
            {"goal": PARALLEL_GOAL, "inputs": {"n": i}, "constraints": {}}, PARALLEL_WORKLOAD
        )
        s.approve(run_id)
        runs[run_id] = workflow_id
        if (i + 1) % 25 == 0 or i + 1 == total:
            say(f"  {i + 1}/{total} runs started and approved")
    out.run_ids = list(runs)
    started_s = time.monotonic() - t0
    say(f"  {total} runs started and approved in {started_s:.1f}s; polling their status every second")

    counts: dict[str, int] = {}
    last_said = 0.0

    def all_ended() -> bool:
        nonlocal counts, last_said
        rows = s.sql(
            "SELECT status, count(*) AS n FROM app.runs WHERE id = ANY(%s) GROUP BY status", (list(runs),)
        )
        counts = {str(r["status"]): int(r["n"]) for r in rows}
        bad = {k: v for k, v in counts.items() if k in FAILED}
        if bad:
            raise RuntimeError(f"runs ended {bad}")
        if time.monotonic() - last_said >= 10:
            last_said = time.monotonic()
            say("  " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return counts.get("succeeded", 0) == total

    try:
        processes.wait_until("every run succeeded", all_ended, s.args.timeout, 1.0)
    except (RuntimeError, TimeoutError) as exc:
        out.fail(str(exc).splitlines()[0])
    elapsed = time.monotonic() - t0
    http_ok = sum(1 for run_id in runs if s.status(run_id) == "succeeded")
    out.checks.update(
        runs=str(total),
        succeeded=str(counts.get("succeeded", 0)),
        http_succeeded=str(http_ok),
        elapsed=f"{elapsed:.1f}s",
        runs_per_s=f"{total / elapsed:.2f}",
    )
    if http_ok != total:
        out.fail(f"{http_ok}/{total} runs succeeded (GET /runs/:id), by status {counts}")

    bad_runs = 0
    totals = {"receipts": 0, "dup_receipts": 0, "sbx_runs": 0, "dup_sbx": 0, "children_recovered": 0}
    for run_id, workflow_id in runs.items():
        checks, failures = s.oracles(run_id, workflow_id, None, TASKS_PER_SLEEP_RUN)
        for key in totals:
            totals[key] += int(checks.get(key, "0"))
        if failures:
            bad_runs += 1
            if bad_runs <= 5:
                say(f"  run {run_id}: " + "; ".join(failures))
    out.checks.update({k: str(v) for k, v in totals.items()})
    out.checks["runs_failing_oracles"] = str(bad_runs)
    if bad_runs:
        out.fail(f"{bad_runs} run(s) failed the per-run oracles")
    s.duplicates(list(runs), out)


# ---- sandbox:fanout:soak ----------------------------------------------------------------------


def push_answers(mock: ocmock.MockServer, tasks: int) -> None:
    """The original's two answers: the plan (one test) and the build decision with `tasks` tests."""
    plan = {"design": ["fan out one sandbox task per test"], "files": [], "risks": [], "tests": ["test0.ts"]}
    build = {"patch": [], "tests": [f"test{i}.ts" for i in range(tasks)], "test_command": "echo running"}
    for agent, response in (("plan", plan), ("build", build)):
        status, _ = http_json(
            "POST", f"{mock.url}/push-agent-response", 5.0, {"agent": agent, "response": response}
        )
        if status != 200:
            raise RuntimeError(f"the OpenCode stand-in refused the {agent} answer: HTTP {status}")


def wait_status(s: Soak, run_id: str, want: str, timeout: float) -> str:
    """Poll GET /runs/:id every 250 ms until `want` or a failed status (or `timeout`); the last status."""
    last = poll_json(
        f"{s.stack.api_url}/runs/{run_id}",
        lambda _, body: isinstance(body, dict) and body.get("status") in (want, *FAILED),
        timeout,
        0.25,
    )
    return str(last[1].get("status")) if last and isinstance(last[1], dict) else "?"


def wait_kill_point(s: Soak, run_id: str, workflow_id: str, out: Outcome) -> str:
    """Until `--kill-at` sandbox runs of the run are recorded; describes the run's tasks then."""
    sbx = s.stack.procs["sbx"]
    at_kill = ""

    def reached() -> bool:
        nonlocal at_kill
        sbx.ensure_running(" before the stop")
        done = s.count("SELECT count(*) FROM app.sbx_runs WHERE run_id = %s", (run_id,))
        if done < s.args.kill_at:
            status = s.run_row(run_id)["status"]
            if status in FAILED:
                raise RuntimeError(f"run {run_id} ended {status} before the stop")
            return False
        kids = s.children(workflow_id)
        pids = set(sbx.live_pids())
        held = sum(1 for k in kids if k["status"] == "PENDING" and executor_pid(k["executor_id"]) in pids)
        statuses = [str(k["status"]) for k in kids]
        # A held task that has recorded its sandbox run is about to end and may be gone before the stop
        # lands; one still in its chaos sleep (no sbx_runs row yet) is in flight for that long. Stop
        # only when the worker holds at least one of those (one attempt per task in these soaks).
        sleeping = held - max(0, done - statuses.count("SUCCESS"))
        if s.args.chaos_sleep_ms and sleeping < 1:
            if done >= s.args.tasks:
                raise RuntimeError(
                    f"all {done} sandbox runs were recorded before the worker was seen holding a sleeping "
                    "task (use more --tasks than the sbx worker has slots)"
                )
            return False
        by_status = " ".join(f"{st}={statuses.count(st)}" for st in sorted(set(statuses)))
        at_kill = (
            f"sbx_runs={done} children={len(kids)} {by_status} held_by_sbx_worker={held} "
            f"held_before_their_sandbox_run={max(0, sleeping)}"
        )
        out.checks.update(at_stop_sbx_runs=str(done), at_stop_held=str(held))
        return True

    processes.wait_until(f"{s.args.kill_at} sandbox runs", reached, KILL_POINT_TIMEOUT_S)
    return at_kill


def stop_sbx(s: Soak) -> tuple[int, str]:
    """Stop the sbx worker as `--stop` says: (when, epoch ms; what happened)."""
    sbx = s.stack.procs["sbx"]
    stop_ms = processes.now_ms()
    if s.args.stop == "kill":
        s.stack.kill9(("sbx",))
        return stop_ms, f"kill -9, exit {sbx.popen.returncode}"
    t0 = time.monotonic()
    sbx.stop(TERM_GRACE_S)  # SIGTERM to the group; kill -9 of what is left after 2 s
    waited = time.monotonic() - t0
    if sbx.popen.returncode == -9 or waited >= TERM_GRACE_S:
        return stop_ms, f"SIGTERM, kill -9 after {TERM_GRACE_S:g}s, exit {sbx.popen.returncode}"
    return stop_ms, f"SIGTERM, exited by itself in {waited:.1f}s, exit {sbx.popen.returncode}"


def run_fanout(s: Soak, out: Outcome) -> None:
    n = s.args.tasks
    intent = {"goal": f"fanout {n} tasks", "inputs": {}, "constraints": {}}
    run_id, workflow_id = s.start_run(intent, FANOUT_WORKLOAD)
    out.run_ids = [run_id]
    say(f"  run {run_id} (workflow {workflow_id}) started; waiting for waiting_input")
    status = wait_status(s, run_id, "waiting_input", WAITING_INPUT_TIMEOUT_S)
    if status != "waiting_input":
        raise RuntimeError(f"run {run_id} is {status}, not waiting_input, after {WAITING_INPUT_TIMEOUT_S:g}s")
    s.approve(run_id)
    approved = time.monotonic()
    say(f"  approved; waiting for {s.args.kill_at} of {n} sandbox runs")

    at_kill = wait_kill_point(s, run_id, workflow_id, out)
    old_pid = s.stack.procs["sbx"].pid
    stop_ms, how = stop_sbx(s)
    out.checks["stopped"] = f"pid={old_pid},rc={s.stack.procs['sbx'].popen.returncode}"
    say(f"  sbx worker pid {old_pid} stopped ({how}) at [{at_kill}]")
    ready_ms = s.stack.start(("sbx",))
    say(
        f"  new sbx worker pid {s.stack.procs['sbx'].pid} ready {(ready_ms - stop_ms) / 1000:.2f}s after "
        f"the stop; polling GET /runs/{run_id}"
    )
    final = wait_status(s, run_id, "succeeded", s.args.timeout)
    run = s.run_row(run_id)
    recovery = (int(run["updated_ms"]) - stop_ms) / 1000 if final == "succeeded" else None
    after = s.count(
        "SELECT count(*) FROM app.sbx_runs WHERE run_id = %s AND created_at >= to_timestamp(%s / 1000.0)",
        (run_id, ready_ms),
    )
    out.checks.update(
        run=run_id,
        tasks=str(n),
        stop=s.args.stop,
        status=final,
        sbx_runs_after_restart=str(after),
        recovery="n/a" if recovery is None else f"{recovery:.2f}s",
        total=f"{time.monotonic() - approved:.1f}s",
    )
    if final != "succeeded":
        out.fail(f"run {final} ({run['error']}) after {s.args.timeout:g}s")
    if int(out.checks["at_stop_sbx_runs"]) >= n:
        out.fail("every sandbox task had run before the stop: it restarted nothing")
    checks, failures = s.oracles(run_id, workflow_id, None, n)
    out.checks.update(checks)
    out.failures.extend(failures)
    s.duplicates([run_id], out)


# ---- main ----------------------------------------------------------------------------------------


SOAKS: dict[str, Callable[[Soak, Outcome], None]] = {"parallel": run_parallel, "fanout": run_fanout}


def soak_env(args: argparse.Namespace, oc_url: str | None) -> dict[str, str]:
    """The processes' environment: ours (fault points, DBOS__APPVERSION and CHAOS_SLEEP_EXECUTE
    dropped), the soak's modes, an application version of its own, and the rate limit raised unless
    set."""
    values = {"OC_MODE": "replay", "SBX_MODE": "mock", "KODO_APP_VERSION": soak.stamp(f"sbxsoak-{args.soak}")}
    if oc_url is not None:
        values.update(OC_MODE="live", OC_BASE_URL=oc_url, OC_STRICT_MODE="1")
    env = soak.proof_env(args, values, ("DBOS__APPVERSION", "CHAOS_SLEEP_EXECUTE"))
    if not env.get(RATE_VAR, "").strip():
        env[RATE_VAR] = SOAK_RATE
    return env


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = usage_problem(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    mock = ocmock.start() if args.soak == "fanout" else None
    try:
        env = soak_env(args, mock.url if mock else None)
        if mock is not None:
            push_answers(mock, args.tasks)
        ready = soak.setup(env, args.log_dir, f"sbxsoak-{args.soak}", say)
        if ready is None:
            return 2
        settings, log_dir = ready
        size = (
            f"total={args.total}" if args.soak == "parallel" else f"tasks={args.tasks} kill_at={args.kill_at}"
        )
        say(
            f"{args.soak}: database {settings.database_url.rsplit('/', 1)[-1]}, broker {settings.broker_url}, "
            f"app version {settings.app_version}, {size}, partition {PARTITION}, "
            f"OC_MODE={env['OC_MODE']} SBX_MODE={env['SBX_MODE']} {RATE_VAR}={env[RATE_VAR]}, logs in {log_dir}"
        )
        return run(args, env, settings, log_dir)
    finally:
        if mock is not None:
            mock.shutdown()
            mock.server_close()


def run(args: argparse.Namespace, env: dict[str, str], settings: Settings, log_dir: Path) -> int:
    s = Soak(args, env, settings, log_dir)
    out = Outcome()
    try:
        with processes.signals_interrupt():
            try:
                extra = (
                    {"sbx": {"CHAOS_SLEEP_EXECUTE": str(args.chaos_sleep_ms)}}
                    if args.soak == "fanout"
                    else None
                )
                say(
                    f"starting reconciler, API :{args.port}, intent worker, sbx worker (admin :{args.admin_port})"
                )
                s.stack.start(PROCESSES, extra_env=extra)
                SOAKS[args.soak](s, out)
            except (OSError, RuntimeError, TimeoutError) as exc:
                out.fail(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                say(f"error: {exc}\n{s.stack.tails()}")
            finally:
                s.stack.stop()
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        s.close()
        return 130
    try:
        if out.run_ids:
            s.report(out.run_ids)
    finally:
        s.close()
    print(out.line(args.soak), flush=True)
    return 0 if not out.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
