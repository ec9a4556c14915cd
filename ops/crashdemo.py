"""`python -m ops.crashdemo`: kill -9 the crash demo mid-flight, restart, prove nothing was lost.

The port of `scripts/wf-crashdemo.sh` (tasks `wf:crashdemo` and, with `--rounds 20 --kill-point
random`, `wf:crashdemo:soak`). Each round:

1. starts the reconciler + admin server, the API (gunicorn) and a Celery worker on intentQ,controlQ,
   each with its `Procfile` command line and in its own process group;
2. POSTs /crashdemo?wf=wf_crashdemo_<ns>_<rand> (step 1 marks s1, durable sleep, step 2 marks s2);
3. waits for the kill point and kill -9s the worker's and the API's whole process groups:
   * `timed` (default, the original's): 1 s after the POST (`--kill-after`); with the default
     WF_SLEEP_MS=5000 that lands in the durable sleep;
   * `sleep`: as soon as dbos.workflow_status says the workflow waits on its sleep;
   * `step`: inside step 1 (fault point `step.started@crashdemo.mark`: the worker hangs there);
   * `committed`: right after step 1's checkpoint committed (`step.committed@crashdemo.mark`);
   * `random`: one of sleep / step / committed per round (seeded by `--seed`);
4. restarts the worker and the API (no fault armed), waits for /healthz, polls GET /marks every
   100 ms until s1=1 and s2=1 (30 s), then checks dbos.workflow_status.status = 'SUCCESS' and the
   recorded operations (mark, sleep, mark);
5. prints one line: round, kill point, workflow id, recovery seconds, marks, status.

Recovery = start of the first operation after the kill - max(kill time, the sleep's wake_at when the
kill landed in the sleep): how long the crash kept the workflow from its next step. It includes the
restart; `worker_back` (kill -> restarted worker ready) shows how much of it was process start-up.

Exit status: 0 when every round converged and the median recovery is under 5 s
(`--max-median-recovery`); 1 otherwise; 2 on bad usage; 130 when interrupted. Processes are always
cleaned up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kodo.config import Settings
from ops import processes, soak
from ops.http_client import http_json, poll_json
from ops.procfile import Stack
from ops.soak import SqlReader, env_int

KILL_POINTS = ("sleep", "step", "committed")
TIMED = "timed"
FAULTS = {"step": "step.started@crashdemo.mark", "committed": "step.committed@crashdemo.mark"}
EXPECTED_OPS = ["crashdemo.mark", "kodo.sleep", "crashdemo.mark"]
MARKS_TIMEOUT_S = 30.0
KILL_POINT_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 10.0
MAX_MEDIAN_RECOVERY_S = 5.0
TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")

say = soak.progress("crashdemo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.crashdemo",
        description="Crash proof of CrashDemoWorkflow: kill -9 the worker and the API at a chosen point, "
        "restart them, and check the marks are exactly {s1:1, s2:1} and the workflow is SUCCESS. "
        "Soak: --rounds 20 --kill-point random.",
    )
    p.add_argument("--rounds", type=int, default=1, help="number of kill/restart rounds (default 1)")
    p.add_argument(
        "--kill-point",
        choices=(TIMED, *KILL_POINTS, "random"),
        default=TIMED,
        help="where to kill: timed = --kill-after seconds after the POST (the original script; lands "
        "in the sleep with the default WF_SLEEP_MS); sleep = during the durable sleep; step = inside "
        "step 1; committed = right after step 1's checkpoint committed; random = one of sleep/step/"
        "committed per round (default: timed)",
    )
    p.add_argument(
        "--kill-after", type=float, default=1.0, help="seconds after the POST for timed (default 1)"
    )
    p.add_argument(
        "--sleep-ms",
        type=int,
        default=env_int("WF_SLEEP_MS", 5000),
        help="the demo's durable sleep in ms (default env WF_SLEEP_MS or 5000)",
    )
    soak.add_common_args(p, port=3004, admin_port=3006, max_median_s=MAX_MEDIAN_RECOVERY_S)
    return p


def plan_kill_points(kind: str, rounds: int, seed: int) -> list[str]:
    """The kill point of each round (`random` draws from sleep/step/committed with `seed`)."""
    return soak.plan_rounds(kind, KILL_POINTS, rounds, seed)


def recovery_ms(ops: list[dict[str, Any]], kill_ms: int) -> tuple[int, int] | None:
    """(recovery in ms, the instant it is counted from) for one killed run, from its recorded ops.

    Recovery ends when the first operation that started after the kill started. It is counted from
    the kill or, when the kill landed in the durable sleep (the operation just before is the sleep),
    from the sleep's wake_at if that is later: a sleeping workflow is not late before it is due.
    """
    ordered = sorted(ops, key=lambda o: int(o["function_id"]))
    for i, op in enumerate(ordered):
        started = op["started_at_epoch_ms"]
        if started is None or int(started) < kill_ms:
            continue
        since = kill_ms
        if i > 0 and ordered[i - 1]["function_name"] == "kodo.sleep" and ordered[i - 1]["output"]:
            since = max(since, int(json.loads(ordered[i - 1]["output"])["wake_at"]))
        return int(started) - since, since
    return None


@dataclass
class RoundResult:
    round: int
    kill_point: str
    workflow_id: str
    recovery_s: float | None = None
    restart_s: float | None = None
    marks: dict[str, int] = field(default_factory=dict)
    status: str = "?"
    ops: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def converged(self) -> bool:
        return (
            not self.error
            and self.marks == {"s1": 1, "s2": 1}
            and self.status == "SUCCESS"
            and self.ops == EXPECTED_OPS
            and self.recovery_s is not None
        )

    def line(self, total: int) -> str:
        rec = soak.recovery_text(self.recovery_s, self.restart_s)
        verdict = "converged" if self.converged else f"FAILED {self.error}".rstrip()
        return (
            f"round {self.round}/{total} kill={self.kill_point} wf={self.workflow_id} recovery={rec} "
            f"marks={json.dumps(self.marks, separators=(',', ':'))} status={self.status} "
            f"ops={','.join(self.ops) or '-'} {verdict}"
        )


class Demo(SqlReader):
    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], settings: Settings, log_dir: Path
    ) -> None:
        super().__init__(settings)
        self.args = args
        self.env = env
        self.log_dir = log_dir

    # ---- database reads (the truth is dbos.workflow_status) -------------------------------------

    def workflow(self, wid: str) -> dict[str, Any] | None:
        rows = self.sql(
            "SELECT status, wait_reason, executor_id, recovery_attempts FROM dbos.workflow_status "
            "WHERE workflow_uuid = %s",
            (wid,),
        )
        return rows[0] if rows else None

    def ops(self, wid: str) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT function_id, function_name, output, started_at_epoch_ms, completed_at_epoch_ms "
            "FROM dbos.operation_outputs WHERE workflow_uuid = %s ORDER BY function_id",
            (wid,),
        )

    # ---- one round ---------------------------------------------------------------------------

    def _wait_kill_point(self, point: str, wid: str, posted: float, stack: Stack) -> None:
        if point == TIMED:
            time.sleep(max(posted + self.args.kill_after - time.monotonic(), 0.0))
        elif point == "sleep":

            def sleeping() -> bool:
                row = self.workflow(wid)
                return row is not None and row["wait_reason"] == "sleep"

            processes.wait_until("the durable sleep", sleeping, KILL_POINT_TIMEOUT_S)
        else:
            say(f"  worker hangs at {stack.procs['intent'].wait_fault(timeout=KILL_POINT_TIMEOUT_S)}")

    def _wait_marks(self, stack: Stack, wid: str) -> dict[str, int]:
        """Poll GET /marks every 100 ms until s1=1 and s2=1 (the original's assert-marks); a
        duplicate (a mark above 1) ends it at once."""
        marks: dict[str, int] = {}

        def settled(status: int, body: Any) -> bool:
            nonlocal marks
            if status == 200 and isinstance(body, dict):
                marks = {k: int(v) for k, v in body.items()}
            return max(marks.get("s1", 0), marks.get("s2", 0)) > 1 or (marks.get("s1"), marks.get("s2")) == (
                1,
                1,
            )

        poll_json(f"{stack.api_url}/marks?wf={wid}", settled, MARKS_TIMEOUT_S)
        return marks

    def run_round(self, n: int, total: int, point: str) -> RoundResult:
        wid = f"wf_crashdemo_{time.time_ns()}_{random.randint(0, 32767)}"
        result = RoundResult(n, point, wid)
        fault_file = self.log_dir / f"{wid}.fault"
        stack = Stack(self.env, self.args.port, self.args.admin_port, self.log_dir, f"round{n:02d}", say)
        try:
            say(
                f"round {n}/{total}: kill point {point}; starting reconciler, API :{self.args.port}, worker"
                + (f" (armed {FAULTS[point]})" if point in FAULTS else "")
            )
            stack.start(("reconciler", "api", "intent"), faults=FAULTS.get(point), fault_file=fault_file)
            status, body = http_json("POST", f"{stack.api_url}/crashdemo?wf={wid}")
            posted = time.monotonic()
            if status != 202:
                raise RuntimeError(f"POST /crashdemo answered {status} {body}")
            say(f"  POST /crashdemo?wf={wid} -> 202")
            self._wait_kill_point(point, wid, posted, stack)
            before = self.ops(wid)
            kill_ms = stack.kill9(("intent", "api"))
            say(
                f"  kill -9 worker and API (process groups gone); recorded before the kill: "
                f"{','.join(o['function_name'] for o in before) or 'nothing'}"
            )
            # The worker first: it resumes the workflow, and a gunicorn booting beside it on a small
            # machine would slow its start. The API follows once the worker is ready.
            result.restart_s = (stack.start(("intent",)) - kill_ms) / 1000
            stack.start(("api",))
            say("  worker and API restarted (no fault armed), healthy; polling /marks")
            result.marks = self._wait_marks(stack, wid)

            def terminal() -> bool:
                row = self.workflow(wid)
                return row is not None and row["status"] in TERMINAL

            with contextlib.suppress(TimeoutError):  # reported below as the status it has
                processes.wait_until("a terminal status", terminal, STATUS_TIMEOUT_S, 0.05)
            row = self.workflow(wid)
            result.status = str(row["status"]) if row else "MISSING"
            ops = self.ops(wid)
            result.ops = [str(o["function_name"]) for o in ops]
            rec = recovery_ms(ops, kill_ms)
            if rec is not None:
                result.recovery_s = rec[0] / 1000
            if result.marks != {"s1": 1, "s2": 1}:
                result.error = f"marks {result.marks} after {MARKS_TIMEOUT_S:.0f}s"
            elif result.status != "SUCCESS":
                result.error = f"status {result.status}"
            elif result.ops != EXPECTED_OPS:
                result.error = f"recorded operations {result.ops}"
            elif rec is None:
                result.error = "no operation started after the kill"
        except (OSError, RuntimeError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            say(f"  error: {exc}\n{stack.tails()}")
        finally:
            stack.stop()
        return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if soak.bad_usage(args):
        return 2
    version = soak.stamp("crashdemo")
    # KODO_APP_VERSION: version parity, only this invocation's processes run its work
    env = soak.proof_env(args, {"KODO_APP_VERSION": version, "WF_SLEEP_MS": str(args.sleep_ms)})
    run = soak.prepare(
        args,
        env,
        prefix="crashdemo",
        version=version,
        details=f"WF_SLEEP_MS={args.sleep_ms}",
        kind=("kill point", args.kill_point, plan_kill_points),
        say=say,
    )
    if run is None:
        return 2
    demo = Demo(args, env, run.settings, run.log_dir)
    return soak.run_proof(
        demo,
        run.plan,
        say,
        lambda results: soak.summarize(results, run.plan, "kill_points", args.max_median_recovery),
    )


if __name__ == "__main__":
    raise SystemExit(main())
