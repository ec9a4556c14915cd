"""`python -m ops.timeproof sleep|scheduler`: the time primitives proved with real restarts.

The ports of the original's `time-sleep-smoke.sh` and scheduler smoke (tasks `wf:time:sleep` and
`wf:time:scheduler`, contract-api §10, seed 001 labs J and K), with the checks the originals lacked.
The processes are the `Procfile`'s (`ops.procfile.Stack`), under an application version of this
invocation's own, against the configured database (`APP_DB_NAME`, default app_local).

`sleep`: start the reconciler, the API and a worker on intentQ,controlQ; POST
/api/ops/sleep?wf=sleep_proof_<ns>&sleep=<ms> (5000); wait for `sleep-before-sleep` and the parked
sleep; `--kill-after` s (2) into the sleep kill -9 the worker, the API and the reconciler; restart the
worker, then the others. Checks: the wake-up time recorded when the sleep started did not move,
`sleep-after-sleep` appears at it (not before; within 2 s of it, or of the worker's return if that
was later), not a full sleep after the restart; five artifacts each, in that order; SUCCESS.

`scheduler`: KODO_SCHEDULE_TICK_MS=<--tick-ms> (2000); the schedule's tick ledger is cleared first
(as lab K clears the ScheduledTick artifacts), so it starts without history. Start the reconciler and
a worker (two schedulers: the worker embeds a reconciler); see three ticks; kill -9 both for
`--down-intervals` (2.5) intervals and check no tick appears meanwhile; restart them with a second
reconciler process (three schedulers); wait three more ticks. Checks: the ticks form one unbroken
series (the missed ones were caught up, started after the restart), each tick has exactly one
workflow, which succeeded, its run `sched-<ms>` is `succeeded` with five `ScheduledTick` artifacts
(stdout `Tick for <ISO>`), and seed 001 lab O's duplicate oracle returns no row.

Each check prints PASS or FAIL; the exit status is 0 when all passed, 1 if not, 2 on bad usage, 130
when interrupted. Every process started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kodo.config import Settings
from kodo.intent.timewf import TICK_WORKFLOW
from ops import processes, soak
from ops.http_client import http_json
from ops.procfile import Stack

say = soak.progress("timeproof")
TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
ON_TIME_S = 2.0  # how late after its wake-up time (or the worker's return) the sleep may end
BEFORE_TIMEOUT_S = 15.0
AFTER_TIMEOUT_S = 30.0
KINDS = ["artifact_index", "timings", "raw", "stderr", "stdout"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.timeproof",
        description="Prove the durable sleep and the scheduler with real kill -9 restarts "
        "(mise run wf:time:sleep, mise run wf:time:scheduler).",
    )
    sub = p.add_subparsers(dest="proof", required=True)
    sleep = sub.add_parser(
        "sleep",
        help="a durable sleep survives kill -9 of every process and wakes at its recorded time",
        description="POST /api/ops/sleep, kill -9 worker, API and reconciler mid-sleep, restart them; "
        "sleep-after-sleep must appear at the recorded wake-up time, not after a fresh full sleep.",
    )
    sleep.add_argument("--sleep-ms", type=int, default=5000, help="the sleep (default 5000 ms)")
    sleep.add_argument(
        "--kill-after", type=float, default=2.0, help="seconds into the sleep to kill (default 2)"
    )
    sched = sub.add_parser(
        "scheduler",
        help="ticks every interval, missed ticks caught up after downtime, none duplicated",
        description="Run the scheduled tick with a short interval, stop every scheduler for more than "
        "an interval (kill -9), restart them with a second reconciler; the ticks must form one unbroken "
        "series with exactly one succeeded workflow and artifact set each.",
    )
    sched.add_argument("--tick-ms", type=int, default=2000, help="KODO_SCHEDULE_TICK_MS (default 2000)")
    sched.add_argument(
        "--down-intervals",
        type=float,
        default=2.5,
        help="downtime, in intervals (default 2.5; must be > 1)",
    )
    for sp, port, admin in ((sleep, 3021, 3022), (sched, 3021, 3022)):
        sp.add_argument("--port", type=int, default=soak.env_int("PORT", port), help=f"API port ({port})")
        sp.add_argument(
            "--admin-port",
            type=int,
            default=soak.env_int("ADMIN_PORT", admin),
            help=f"admin/reconciler port ({admin}; the scheduler's second reconciler takes the next one)",
        )
        sp.add_argument("--log-dir", type=Path, default=None, help="where process logs go (default: temp)")
    return p


class Checks:
    """The verdicts, printed as they are made."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        self.count += 1
        print(f"  {'PASS' if ok else 'FAIL'}  {what}" + (f"  ({detail})" if detail else ""), flush=True)
        if not ok:
            self.failed.append(what)
        return ok

    def summary(self, proof: str) -> int:
        verdict = "PASS" if not self.failed else f"FAIL ({len(self.failed)} of {self.count} checks failed)"
        print(f"{proof}: {self.count} checks -> {verdict}", flush=True)
        return 0 if not self.failed else 1


def iso_ms(epoch_ms: int) -> str:
    t = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


class Proof(soak.SqlReader):
    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], settings: Settings, log_dir: Path
    ) -> None:
        super().__init__(settings)
        self.args = args
        self.env = env
        self.log_dir = log_dir
        self.checks = Checks()

    def stack(self, tag: str, admin_port: int | None = None) -> Stack:
        port = self.args.admin_port if admin_port is None else admin_port
        return Stack(self.env, self.args.port, port, self.log_dir, tag, say)

    def workflow(self, wid: str) -> dict[str, Any] | None:
        rows = self.sql(
            "SELECT status, wait_reason, wake_at_epoch_ms FROM dbos.workflow_status WHERE workflow_uuid = %s",
            (wid,),
        )
        return rows[0] if rows else None

    def ops(self, wid: str) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT function_id, function_name, output, started_at_epoch_ms FROM dbos.operation_outputs "
            "WHERE workflow_uuid = %s ORDER BY function_id",
            (wid,),
        )

    # ---- sleep ---------------------------------------------------------------------------------

    def sleep_artifacts(self, wid: str) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT step_id, idx, kind, (extract(epoch FROM created_at) * 1000)::bigint AS at_ms "
            "FROM app.artifacts WHERE run_id = %s AND step_id LIKE 'sleep-%%' ORDER BY created_at, step_id, idx",
            (wid,),
        )

    def run_sleep(self) -> None:
        a, c = self.args, self.checks
        wid = f"sleep_proof_{time.time_ns()}"
        stack = self.stack("sleep")
        try:
            say(f"starting reconciler, API :{a.port}, worker")
            stack.start(("reconciler", "api", "intent"))
            status, body = http_json("POST", f"{stack.api_url}/api/ops/sleep?wf={wid}&sleep={a.sleep_ms}")
            c.check(
                status == 202 and body == {"accepted": True, "workflowID": wid},
                f"POST /api/ops/sleep?wf={wid}&sleep={a.sleep_ms} -> 202",
                f"{status} {body}",
            )

            def parked() -> bool:
                row = self.workflow(wid)
                return row is not None and row["wait_reason"] == "sleep"

            processes.wait_until("the parked sleep", parked, BEFORE_TIMEOUT_S, 0.05)
            before = self.sleep_artifacts(wid)
            c.check(
                [r["step_id"] for r in before] == ["sleep-before-sleep"] * 5, "sleep-before-sleep written"
            )
            [sleep_op] = [o for o in self.ops(wid) if o["function_name"] == "kodo.sleep"]
            wake_at = int(json.loads(sleep_op["output"])["wake_at"])
            sleep_started = int(sleep_op["started_at_epoch_ms"])
            say(f"  sleeping since {iso_ms(sleep_started)}, wake-up recorded at {iso_ms(wake_at)}")
            time.sleep(max(sleep_started / 1000 + a.kill_after - time.time(), 0.0))
            killed_at = stack.kill9(("intent", "api", "reconciler"))
            say(
                f"  kill -9 worker, API and reconciler {(killed_at - sleep_started) / 1000:.1f}s into the sleep"
            )
            c.check(
                killed_at < wake_at, "the kill landed mid-sleep", f"{(wake_at - killed_at) / 1000:.1f}s left"
            )
            back_at = stack.start(("intent",))
            stack.start(("api", "reconciler"))
            say(f"  worker back {(back_at - killed_at) / 1000:.1f}s after the kill; API and reconciler too")

            def ended() -> bool:
                row = self.workflow(wid)
                return row is not None and row["status"] in TERMINAL

            processes.wait_until("the end of the sleep workflow", ended, AFTER_TIMEOUT_S, 0.05)
            row = self.workflow(wid)
            c.check(
                row is not None and row["status"] == "SUCCESS", "workflow SUCCESS", str(row and row["status"])
            )
            ops = self.ops(wid)
            names = [o["function_name"] for o in ops]
            expected = ["TimeWorkflow.recordWakeMetadata", "kodo.sleep", "TimeWorkflow.recordWakeMetadata"]
            c.check(
                names == expected, "operations: before, sleep, after (nothing ran twice)", ",".join(names)
            )
            recorded = int(json.loads(ops[1]["output"])["wake_at"]) if len(ops) > 1 else None
            c.check(recorded == wake_at, "wake-up time unchanged by the restart", f"{recorded} vs {wake_at}")
            arts = self.sleep_artifacts(wid)
            steps = [r["step_id"] for r in arts]
            c.check(
                steps == ["sleep-before-sleep"] * 5 + ["sleep-after-sleep"] * 5
                and [r["kind"] for r in arts] == KINDS * 2,
                "artifacts: sleep-before-sleep then sleep-after-sleep, five each (lab J's oracle)",
            )
            if len(ops) == 3:
                woke = int(ops[2]["started_at_epoch_ms"])
                due = max(wake_at, back_at)
                c.check(
                    woke >= wake_at, "not woken before its wake-up time", f"{(woke - wake_at) / 1000:+.2f}s"
                )
                c.check(
                    woke <= due + ON_TIME_S * 1000,
                    f"woken within {ON_TIME_S:g}s of max(wake-up, worker back)",
                    f"{(woke - due) / 1000:+.2f}s",
                )
                c.check(
                    woke < back_at + a.sleep_ms,
                    "not a fresh full sleep from the restart",
                    f"woke {(woke - back_at) / 1000:.2f}s after the worker was back; a sleep started again "
                    f"would end {a.sleep_ms / 1000:.2f}s after it",
                )
        except (OSError, RuntimeError, TimeoutError) as exc:
            c.check(False, f"the proof ran: {type(exc).__name__}: {exc}")
            say(stack.tails())
        finally:
            stack.stop()

    # ---- scheduler -----------------------------------------------------------------------------

    def ticks(self) -> list[dict[str, Any]]:
        return self.sql(
            "SELECT tick_epoch_ms, workflow_uuid, created_at_epoch_ms FROM dbos.schedule_ticks "
            "WHERE schedule_name = %s ORDER BY tick_epoch_ms",
            (TICK_WORKFLOW,),
        )

    def wait_ticks(self, n: int, after_ms: int, timeout_s: float) -> None:
        def enough() -> bool:
            return sum(1 for t in self.ticks() if int(t["tick_epoch_ms"]) >= after_ms) >= n

        processes.wait_until(f"{n} ticks", enough, timeout_s, 0.1)

    def run_scheduler(self) -> None:
        a, c = self.args, self.checks
        every = a.tick_ms
        self.sql("DELETE FROM dbos.schedule_ticks WHERE schedule_name = %s RETURNING 1", (TICK_WORKFLOW,))
        say(f"tick ledger of {TICK_WORKFLOW} cleared; KODO_SCHEDULE_TICK_MS={every}")
        first, second = self.stack("sched"), self.stack("sched2", a.admin_port + 1)
        try:
            say("starting reconciler and worker (two schedulers)")
            t0 = first.start(("reconciler", "intent"))
            self.wait_ticks(3, 0, 5 + 4 * every / 1000)
            killed_at = first.kill9(("intent", "reconciler"))
            before = [int(t["tick_epoch_ms"]) for t in self.ticks()]
            say(
                f"  {len(before)} ticks; kill -9 worker and reconciler, down for {a.down_intervals:g} intervals"
            )
            time.sleep(a.down_intervals * every / 1000)
            during = [int(t["tick_epoch_ms"]) for t in self.ticks()]
            c.check(during == before, "no tick while every scheduler was down")
            restart_at = processes.now_ms()
            back_at = first.start(("reconciler", "intent"))
            second.start(("reconciler",))
            say(
                f"  restarted {(back_at - killed_at) / 1000:.1f}s after the kill, with a second reconciler "
                f"on :{a.admin_port + 1} (three schedulers)"
            )
            self.wait_ticks(3, back_at, 5 + 4 * every / 1000)

            cutoff = int(self.ticks()[-1]["tick_epoch_ms"])  # the ticks checked: up to here

            def settled() -> bool:
                ids = [str(t["workflow_uuid"]) for t in self.ticks() if int(t["tick_epoch_ms"]) <= cutoff]
                rows = self.sql(
                    "SELECT count(*) AS n FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) "
                    "AND status = ANY(%s)",
                    (ids, list(TERMINAL)),
                )
                return int(rows[0]["n"]) == len(ids)

            processes.wait_until("every tick's workflow ended", settled, AFTER_TIMEOUT_S, 0.1)
            first.stop()
            second.stop()
            self.check_ticks(t0, killed_at, restart_at, every, cutoff)
        except (OSError, RuntimeError, TimeoutError) as exc:
            c.check(False, f"the proof ran: {type(exc).__name__}: {exc}")
            say(first.tails() + "\n" + second.tails())
        finally:
            first.stop()
            second.stop()

    def check_ticks(self, t0: int, killed_at: int, restart_at: int, every: int, cutoff: int) -> None:
        """Check the ticks up to `cutoff` (later ones may have started as the processes stopped)."""
        c = self.checks
        ledger = [t for t in self.ticks() if int(t["tick_epoch_ms"]) <= cutoff]
        ticks = [int(t["tick_epoch_ms"]) for t in ledger]
        c.check(
            bool(ticks) and ticks[0] <= t0 + every, "the first tick came within one interval of the start"
        )
        c.check(
            bool(ticks) and ticks == list(range(ticks[0], ticks[-1] + 1, every)),
            f"one unbroken series of {len(ticks)} ticks, every {every} ms (none missed, none twice)",
            f"{iso_ms(ticks[0])} .. {iso_ms(ticks[-1])}" if ticks else "none",
        )
        missed = [t for t in ledger if killed_at < int(t["tick_epoch_ms"]) < restart_at]
        c.check(
            len(missed) >= 1 and all(int(t["created_at_epoch_ms"]) >= restart_at for t in missed),
            "the ticks missed while down were caught up after the restart",
            f"{len(missed)} caught up: " + ", ".join(iso_ms(int(t["tick_epoch_ms"])) for t in missed),
        )
        ids = [str(t["workflow_uuid"]) for t in ledger]
        c.check(
            ids == [f"sched-{TICK_WORKFLOW}-{t}" for t in ticks],
            "each tick's workflow id is sched-<schedule>-<tick ms>",
        )
        rows = self.sql(
            "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE name = %s AND workflow_uuid = ANY(%s)",
            (TICK_WORKFLOW, ids),
        )
        statuses = {str(r["workflow_uuid"]): str(r["status"]) for r in rows}
        c.check(
            len(rows) == len(ids) and set(statuses.values()) <= {"SUCCESS"},
            "exactly one workflow per tick, every one SUCCESS",
            f"{len(rows)} workflows for {len(ids)} ticks; {sorted(set(statuses.values()))}",
        )
        runs = self.sql(
            "SELECT r.id, r.status, r.intent_id, count(a.*) AS n, "
            "max(CASE WHEN a.kind = 'stdout' THEN a.inline->>'text' END) AS stdout "
            "FROM app.runs r LEFT JOIN app.artifacts a ON a.run_id = r.id AND a.step_id = 'ScheduledTick' "
            "WHERE r.id = ANY(%s) GROUP BY r.id, r.status, r.intent_id",
            ([f"sched-{t}" for t in ticks],),
        )
        by_id = {str(r["id"]): r for r in runs}
        good = [
            t
            for t in ticks
            if (r := by_id.get(f"sched-{t}")) is not None
            and (r["status"], r["intent_id"], int(r["n"])) == ("succeeded", "scheduled-ops", 5)
            and r["stdout"] == f"Tick for {iso_ms(t)}"
        ]
        c.check(
            good == ticks,
            "each tick: run sched-<ms> succeeded (intent scheduled-ops), five ScheduledTick artifacts, "
            "stdout 'Tick for <ISO>'",
            f"{len(good)} of {len(ticks)}",
        )
        dups = self.sql(
            "SELECT run_id, step_id, task_key, idx, attempt, count(*) FROM app.artifacts "
            "WHERE step_id = 'ScheduledTick' GROUP BY run_id, step_id, task_key, idx, attempt HAVING count(*) > 1",
            (),
        )
        c.check(dups == [], "lab O duplicate oracle on ScheduledTick artifacts: no row")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.proof == "scheduler" and (args.tick_ms < 1000 or args.down_intervals <= 1):
        print("--tick-ms must be >= 1000 and --down-intervals > 1", file=sys.stderr)
        return 2
    if args.proof == "sleep" and not 0 < args.kill_after * 1000 < args.sleep_ms - 500:
        print("--kill-after must land inside the sleep (0 < kill-after < sleep - 0.5 s)", file=sys.stderr)
        return 2
    ports = [args.port, args.admin_port] + ([args.admin_port + 1] if args.proof == "scheduler" else [])
    for port in ports:
        if not processes.port_free(port):
            print(f"port {port} is in use; pick others with --port/--admin-port", file=sys.stderr)
            return 2
    version = soak.stamp(f"time-{args.proof}")
    tick_ms = str(args.tick_ms) if args.proof == "scheduler" else "0"  # the sleep proof runs no tick
    env = soak.proof_env(args, {"KODO_APP_VERSION": version, "KODO_SCHEDULE_TICK_MS": tick_ms})
    ready = soak.setup(env, args.log_dir, f"time-{args.proof}", say)
    if ready is None:
        return 2
    settings, log_dir = ready
    say(
        f"{args.proof} proof: database {settings.database_url.rsplit('/', 1)[-1]}, app version {version}, "
        f"logs in {log_dir}; migrations applied"
    )
    proof = Proof(args, env, settings, log_dir)
    runner: Callable[[], None] = proof.run_sleep if args.proof == "sleep" else proof.run_scheduler
    try:
        with processes.signals_interrupt():
            runner()
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        return 130
    finally:
        proof.close()
    return proof.checks.summary(f"wf:time:{args.proof}")


if __name__ == "__main__":
    raise SystemExit(main())
