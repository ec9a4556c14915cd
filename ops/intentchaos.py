"""`python -m ops.intentchaos`: kill -9 the sandbox worker while ExecuteST runs; nothing is done twice.

The port of `scripts/wf-intent-chaos.sh` (task `wf:intent:chaos`; `wf:intent:chaos:soak` runs it
for 10 rounds with `--kill random`). Each round, against the database of the environment
(APP_DB_NAME, default app_local; migrated first):

1. starts the reconciler + admin server, the API (the shim: it enqueues and reads, never executes),
   an intent worker (`-Q intentQ,controlQ`) and an sbx worker (`-Q sbxQ`) with
   CHAOS_SLEEP_EXECUTE=5000 (each sandbox task sleeps 5 s before it runs), each with its `Procfile`
   command line, in its own process group, with OC_MODE=replay SBX_MODE=mock and an application
   version of the round's own (so no leftover of an earlier run is picked up);
2. POST /intents (goal "chaos sleep 5", `constraints.testHooks.tests`: `--tasks` tests, one sandbox
   task each; 5 as the original's 5 sandbox runs), POST /intents/:id/run (intentQ, sandbox-default,
   queuePartitionKey "chaos-partition", workload {2,3,2}) and, right after, POST
   /runs/:id/approve-plan;
3. waits until the sandbox tasks execute: app.runs.last_step = DecideST, every sbxQ child of the run
   in dbos.workflow_status, at least one of them PENDING and held by a process of the sbx worker
   (then up to 1.5 s more, until as many as its pool runs are), and no app.sbx_runs row yet;
4. kill -9s the whole process group of the sbx worker (`--kill sbx`, the default) or of both
   workers (`--kill workers`); `--kill random` picks one per round (seeded by `--seed`);
5. starts a second worker in place of each killed one (no chaos sleep) and polls GET /runs/:id
   until `succeeded` (`--timeout`, 60 s; `failed`/`retries_exceeded` end the round at once);
6. checks with SQL: CompileST, ApplyPatchST and DecideST each have exactly one app.run_steps row,
   attempt 1 (they were not re-run); ExecuteST has one row; the run has one receipt and none with
   seen_count > 1; app.sbx_runs has no duplicate (run_id, step_id, task_key, attempt) and exactly
   one row per task, attempt 1, err_code NONE; no sandbox run was recorded before the kill (the
   kill landed inside ExecuteST); the parent workflow and every child are SUCCESS;
7. prints one line: round, kill, run id, recovery seconds, worker_back seconds, oracles, verdict.

The SQL reads and the oracles of step 6 are `ops.intentoracles`'.

Recovery = the run's `succeeded` write (app.runs.updated_at) - the kill: how long the crash kept the
run from finishing, restart of the worker included (`worker_back`: kill -> the second worker ready).
With the 5 s sleep only in the killed worker, an undisturbed run would have finished ~5 s after the
tasks started.

Differences from the original script: it ran one worker for every queue, with OC_MODE=live against
an OpenCode mock; kodo's split topology has two worker pools, and OC_MODE=replay is the built-in
deterministic compiler, so no mock daemon is needed. `--kill workers` also takes down the intent
worker: the parent, parked on its children (it holds no worker while it waits), must then be woken
on the second intent worker.

Exit status: 0 when every round converged and the median recovery is under 20 s
(`--max-median-recovery`); 1 otherwise; 2 on bad usage; 130 when interrupted. Processes are always
cleaned up.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kodo.config import Settings
from ops import processes, soak
from ops.http_client import http_json, poll_json
from ops.intentoracles import IntentRunSql
from ops.procfile import Stack

KILLS = ("sbx", "workers")
GOAL = "chaos sleep 5"
PARTITION = "chaos-partition"
RUN_BODY = {
    "queueName": "intentQ",
    "recipeName": "sandbox-default",
    "queuePartitionKey": PARTITION,
    "workload": {"concurrency": 2, "steps": 3, "sandboxMinutes": 2},
}
CHAOS_SLEEP_MS = 5000
KILL_POINT_TIMEOUT_S = 30.0
SUCCEEDED_TIMEOUT_S = 60.0
MAX_MEDIAN_RECOVERY_S = 20.0
SBX_CONCURRENCY = 4  # the Procfile's default KODO_SBX_CONCURRENCY
SETTLE_S = 1.5
FAILED = ("failed", "retries_exceeded", "canceled")

say = soak.progress("intentchaos")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.intentchaos",
        description="Chaos proof of the intent run: approve a run at once, kill -9 the sbx worker (or "
        "both workers) while its sandbox tasks sleep in ExecuteST, start a second worker, and check the "
        "run succeeds with CompileST/ApplyPatchST/DecideST attempt 1, no receipt seen twice and one "
        "sandbox run per task. Soak: --rounds 10 --kill random.",
    )
    p.add_argument("--rounds", type=int, default=1, help="number of kill/restart rounds (default 1)")
    p.add_argument(
        "--kill",
        choices=(*KILLS, "random"),
        default="sbx",
        help="what to kill -9: sbx = the sbxQ worker running the sandbox tasks; workers = the sbxQ and "
        "the intentQ,controlQ workers; random = one of them per round (default: sbx)",
    )
    p.add_argument(
        "--tasks",
        type=int,
        default=5,
        help="sandbox tasks of the run (tests in constraints.testHooks; default 5, the original's count)",
    )
    p.add_argument(
        "--chaos-sleep-ms",
        type=int,
        default=CHAOS_SLEEP_MS,
        help="CHAOS_SLEEP_EXECUTE of the first sbx worker, in ms (default 5000)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=SUCCEEDED_TIMEOUT_S,
        help="seconds to wait for `succeeded` after the restart (default 60)",
    )
    soak.add_common_args(p, port=3011, admin_port=3012, max_median_s=MAX_MEDIAN_RECOVERY_S)
    return p


def plan_kills(kind: str, rounds: int, seed: int) -> list[str]:
    """What each round kills (`random` draws from sbx/workers with `seed`)."""
    return soak.plan_rounds(kind, KILLS, rounds, seed)


def executor_pid(executor_id: str | None) -> int | None:
    """The pid in an executor id `<host>:<pid>:<nonce>`."""
    if not executor_id:
        return None
    parts = executor_id.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@dataclass
class RoundResult:
    round: int
    kill: str
    run_id: str = "-"
    recovery_s: float | None = None
    restart_s: float | None = None
    status: str = "?"
    at_kill: str = "-"
    checks: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def converged(self) -> bool:
        return (
            not self.error
            and not self.failures
            and self.status == "succeeded"
            and bool(self.checks)
            and self.recovery_s is not None
        )

    def line(self, total: int) -> str:
        rec = soak.recovery_text(self.recovery_s, self.restart_s)
        checks = " ".join(f"{k}={v}" for k, v in self.checks.items()) or "-"
        if self.converged:
            verdict = "converged"
        else:
            verdict = "FAILED " + "; ".join([*self.failures, *([self.error] if self.error else [])])
        return (
            f"round {self.round}/{total} kill={self.kill} run={self.run_id} recovery={rec} "
            f"status={self.status} at_kill=[{self.at_kill}] {checks} {verdict}".rstrip()
        )


class Chaos(IntentRunSql):
    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], settings: Settings, log_dir: Path, stamp: str
    ) -> None:
        super().__init__(settings)
        self.args = args
        self.env = env
        self.log_dir = log_dir
        self.stamp = stamp

    # ---- HTTP (the runbook's new_intent / new_run / approve / wait_status) ------------------------

    def _post(self, stack: Stack, path: str, body: Any, want: int) -> dict[str, Any]:
        status, answer = http_json("POST", f"{stack.api_url}{path}", 10.0, body)
        if status != want or not isinstance(answer, dict):
            raise RuntimeError(f"POST {path} answered {status} {answer}")
        return answer

    # ---- one round ---------------------------------------------------------------------------

    def _wait_executing(self, stack: Stack, run_id: str, workflow_id: str) -> str:
        """Until the sandbox tasks run in the sbx worker (none recorded yet); describes that state.

        First until one child is PENDING in a process of the sbx worker, then (at most SETTLE_S more,
        well inside the chaos sleep) until as many as its pool can run are: the kill then lands with
        every task it could take in flight.
        """
        sbx = stack.procs["sbx"]
        target = min(self.args.tasks, int(self.env.get("KODO_SBX_CONCURRENCY") or SBX_CONCURRENCY))
        state = ""

        def held_by_sbx(at_least: int) -> bool:
            nonlocal state
            sbx.ensure_running(" before the kill point")
            run = self.run_row(run_id)
            if run["status"] in FAILED:
                raise RuntimeError(f"run {run_id} is {run['status']} before the kill: {run['error']}")
            if run["last_step"] != "DecideST":
                return False
            kids = self.children(workflow_id)
            if len(kids) < self.args.tasks:
                return False
            pids = set(sbx.live_pids())
            held = [k for k in kids if k["status"] == "PENDING" and executor_pid(k["executor_id"]) in pids]
            done = self.count("SELECT count(*) FROM app.sbx_runs WHERE run_id = %s", (run_id,))
            if done:
                raise RuntimeError(f"{done} sandbox run(s) recorded before the kill point (sleep too short?)")
            statuses = [str(k["status"]) for k in kids]
            state = (
                f"last_step=DecideST children={len(kids)} "
                + " ".join(f"{s}={statuses.count(s)}" for s in sorted(set(statuses)))
                + f" held_by_sbx_worker={len(held)} sbx_runs=0"
            )
            return len(held) >= at_least

        processes.wait_until(
            "the sandbox tasks executing in the sbx worker", lambda: held_by_sbx(1), KILL_POINT_TIMEOUT_S
        )
        with contextlib.suppress(TimeoutError):  # kill with what runs by then
            processes.wait_until(f"{target} tasks in flight", lambda: held_by_sbx(target), SETTLE_S)
        return state

    def _wait_succeeded(self, stack: Stack, run_id: str) -> str:
        """Poll GET /runs/:id every 100 ms until succeeded (a failed status ends it at once)."""

        def status_of(status: int, body: Any) -> str | None:
            return str(body.get("status")) if status == 200 and isinstance(body, dict) else None

        last = poll_json(
            f"{stack.api_url}/runs/{run_id}",
            lambda *answer: status_of(*answer) in ("succeeded", *FAILED),
            self.args.timeout,
        )
        return (last and status_of(*last)) or "?"

    def run_round(self, n: int, total: int, kill: str) -> RoundResult:
        result = RoundResult(n, kill)
        env = {**self.env, "KODO_APP_VERSION": f"{self.stamp}-r{n:02d}"}
        stack = Stack(env, self.args.port, self.args.admin_port, self.log_dir, f"round{n:02d}", say)
        killed = ("sbx",) if kill == "sbx" else ("sbx", "intent")
        try:
            say(
                f"round {n}/{total}: kill {'+'.join(killed)}; starting reconciler, API (shim) "
                f":{self.args.port}, intent worker, sbx worker (CHAOS_SLEEP_EXECUTE={self.args.chaos_sleep_ms})"
            )
            chaos_env = {"sbx": {"CHAOS_SLEEP_EXECUTE": str(self.args.chaos_sleep_ms)}}
            stack.start(("reconciler", "api", "intent", "sbx"), extra_env=chaos_env)
            tests = [f"chaos{i}.test.ts" for i in range(self.args.tasks)]
            intent = {"goal": GOAL, "inputs": {}, "constraints": {"testHooks": {"tests": tests}}}
            intent_id = str(self._post(stack, "/intents", intent, 201)["intentId"])
            started = self._post(stack, f"/intents/{intent_id}/run", RUN_BODY, 202)
            run_id, workflow_id = str(started["runId"]), str(started.get("workflowId") or intent_id)
            result.run_id = run_id
            self._post(stack, f"/runs/{run_id}/approve-plan", {"approvedBy": "intentchaos"}, 202)
            say(f"  intent {intent_id}, run {run_id} started and approved; waiting for the sandbox tasks")
            result.at_kill = self._wait_executing(stack, run_id, workflow_id)
            kill_ms = stack.kill9(killed)
            say(f"  kill -9 {'+'.join(killed)} worker(s) (process groups gone) at {result.at_kill}")
            result.restart_s = (stack.start(killed) - kill_ms) / 1000
            say(f"  second {'+'.join(killed)} worker(s) ready (no chaos sleep); polling GET /runs/{run_id}")
            result.status = self._wait_succeeded(stack, run_id)
            run = self.run_row(run_id)
            if result.status == "succeeded" and run["status"] == "succeeded":
                result.recovery_s = (int(run["updated_ms"]) - kill_ms) / 1000
            elif result.status in FAILED:
                result.error = f"run {result.status}: {run['error']}"
            else:
                result.error = f"no succeeded after {self.args.timeout:.0f}s (status {result.status})"
            result.checks, result.failures = self.oracles(run_id, workflow_id, kill_ms, self.args.tasks)
            if result.failures:
                say(f"  oracle failures:\n{stack.tails()}")
        except (OSError, RuntimeError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            say(f"  error: {exc}\n{stack.tails()}")
        finally:
            stack.stop()
        return result


def summarize(results: list[RoundResult], plan: list[str], max_median_s: float) -> tuple[str, bool]:
    dup_receipts = sum(int(r.checks.get("dup_receipts", "0")) for r in results)
    dup_sbx = sum(int(r.checks.get("dup_sbx", "0")) for r in results)
    extra = f"dup_receipts={dup_receipts} dup_sbx={dup_sbx}"
    return soak.summarize(results, plan, "kills", max_median_s, extra)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if soak.bad_usage(
        args,
        (args.tasks < 1, "--tasks must be >= 1"),
        (
            args.chaos_sleep_ms < 3000,
            "--chaos-sleep-ms must be >= 3000 (the kill has to land inside the sleep)",
        ),
    ):
        return 2
    stamp = soak.stamp("intentchaos")
    # OC_MODE=replay: the built-in planner/decider (no OpenCode daemon needed); SBX_MODE=mock: the mock sandbox
    env = soak.proof_env(
        args, {"OC_MODE": "replay", "SBX_MODE": "mock"}, ("CHAOS_SLEEP_EXECUTE", "DBOS__APPVERSION")
    )
    run = soak.prepare(
        args,
        env,
        prefix="intentchaos",
        version=f"{stamp}-rNN",
        details=f"CHAOS_SLEEP_EXECUTE={args.chaos_sleep_ms}, tasks={args.tasks}",
        kind=("kill", args.kill, plan_kills),
        say=say,
    )
    if run is None:
        return 2
    chaos = Chaos(args, env, run.settings, run.log_dir, stamp)
    return soak.run_proof(
        chaos, run.plan, say, lambda results: summarize(results, run.plan, args.max_median_recovery)
    )


if __name__ == "__main__":
    raise SystemExit(main())
