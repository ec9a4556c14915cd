"""`mise run verify`: the fault suite. A load of intent runs and crash-demo workflows runs over HTTP
while faults are injected at random moments; at the end every run must be terminal as expected and
every duplicate oracle of the runbooks zero.

It starts its own PostgreSQL and Redis on spare ports (`ops.servers`; never the machine's shared
ones, so it can restart them freely) and the Procfile processes (API, reconciler, intentQ and sbxQ
workers) against them. Faults, each drawn in a seeded random order and injected at a random moment
(0.5-2.5 s after the previous one recovered):

  kill-intent, kill-sbx   kill -9 of the worker's process group, started again at once (as the
                          supervisor of `mise run start` does)
  pg-restart              Postgres stopped (fast shutdown: every connection cut), down 2 s, started
  redis-restart           Redis stopped, down 2 s, started empty (it keeps nothing on disk)
  redis-flush             FLUSHALL: every queued message gone
  duplicates              every workflow's delivery published twice more (in flight or finished)

Recovery of a fault: from the moment it ends (the worker ready again, the server answering) until
every workflow in flight then is terminal; a workflow in a durable sleep counts from its wake-up time
if that is later. It includes the work's own duration (an intent run takes ~0.1-0.5 s, a crash-demo
sleeps 0.3 s). Targets: a kill -9 converges within 5 s of the kill (its restart included), a
Postgres restart within 5 s of Postgres being back, a Redis restart or flush within 3 s of Redis
being back.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kodo.config import Settings
from kodo.db import migrate
from kodo.dispatch import RUN_WORKFLOW_TASK, producer_app
from ops import processes
from ops.procfile import Stack
from ops.servers import PostgresServer, RedisServer
from ops.soak import SqlReader, progress, stamp
from ops.verifyload import Tally, run_clients

FAULTS = ("kill-intent", "kill-sbx", "pg-restart", "redis-restart", "redis-flush", "duplicates")
TARGET_S = {"kill-intent": 5.0, "kill-sbx": 5.0, "pg-restart": 5.0, "redis-restart": 3.0, "redis-flush": 3.0}
DUPLICATES_TARGET_S = 5.0
SETTLE_S = 60.0  # a fault's in-flight workflows must be terminal within this (else: not recovered)
DOWN_S = 2.0
DEMO_SLEEP_MS = 300  # the crash-demo's durable sleep: short, so a fault finds many mid-sleep
PROCESSES = ("reconciler", "api", "intent", "sbx")
LIVE = "('PENDING', 'ENQUEUED')"

# The runbooks' duplicate oracles (seed 000 L13/L17, 001 lab O with the full artifact key), each a
# count that must be zero.
ORACLES = {
    "receipts_seen_twice": "SELECT count(*) FROM app.mock_receipts WHERE seen_count > 1",
    "runs_with_receipts_not_1": (
        "SELECT count(*) FROM app.runs r WHERE r.status = 'succeeded' AND "
        "(SELECT count(*) FROM app.mock_receipts m WHERE m.run_id = r.id) <> 1"
    ),
    "product_steps_run_twice": (
        "SELECT count(*) FROM (SELECT run_id, step_id FROM app.run_steps GROUP BY 1, 2 HAVING count(*) > 1) d"
    ),
    "sandbox_tasks_run_twice": (
        "SELECT count(*) FROM (SELECT run_id, task_key FROM app.sbx_runs GROUP BY 1, 2 HAVING count(*) > 1) d"
    ),
    "artifacts_by_full_key": (
        "SELECT count(*) FROM (SELECT 1 FROM app.artifacts GROUP BY run_id, step_id, task_key, idx, attempt "
        "HAVING count(*) > 1) d"
    ),
    "crashdemo_steps_marked_twice": (
        "SELECT count(*) FROM (SELECT run_id, step FROM app.marks GROUP BY 1, 2 HAVING count(*) > 1) d"
    ),
}


# What a run or workflow left unfinished was doing (printed for the first few).
STUCK = (
    "SELECT r.id, r.status AS run, r.last_step, r.next_action, w.workflow_uuid AS wf, w.status, "
    "w.wait_reason, w.executor_id, w.lease_until_epoch_ms AS lease_until, w.published_at_epoch_ms AS "
    "published_at, w.publish_count, w.recovery_attempts, (extract(epoch FROM now()) * 1000)::bigint AS now "
    "FROM dbos.workflow_status w LEFT JOIN app.runs r ON r.workflow_id = w.workflow_uuid "
    "WHERE r.id = ANY(%s) OR w.workflow_uuid = ANY(%s)"
)


@dataclass
class Fault:
    kind: str
    at_s: float  # seconds from the start of the load
    in_flight: int = 0
    down_s: float = 0.0  # from its start to its end (the worker back and ready, the server answering)
    recovery_s: float | None = None  # None: its workflows were not all terminal within SETTLE_S

    @property
    def target_s(self) -> float:
        return TARGET_S.get(self.kind, DUPLICATES_TARGET_S)

    @property
    def measured_s(self) -> float | None:
        """What the target bounds: for a kill, from the kill (the restart counts); for a server
        fault, from the server being back; None if not recovered."""
        if self.recovery_s is None:
            return None
        return self.recovery_s + (self.down_s if self.kind.startswith("kill-") else 0.0)

    @property
    def ok(self) -> bool:
        return self.measured_s is not None and self.measured_s <= self.target_s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ops.verify",
        description="The fault suite: a load of intent runs and crash-demo workflows under injected "
        "faults (kill -9 of each worker, Postgres and Redis restarts, a Redis flush, duplicate "
        "deliveries) on private Postgres and Redis servers; prints recovery per fault and the "
        "duplicate oracles, and exits 1 unless every target holds.",
    )
    p.add_argument("--rounds", type=int, default=3, help="times each fault is injected (default 3)")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated fault kinds (default all: {','.join(FAULTS)})",
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    p.add_argument("--min-runs", type=int, default=200, help="workflows started at least (default 200)")
    p.add_argument(
        "--crash-share", type=float, default=0.3, help="share of crash-demo workflows (default 0.3)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the fault order and moments (default: time)"
    )
    p.add_argument("--log-dir", type=Path, default=None, help="where process logs go (default: a temp dir)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.faults.split(",")) - set(FAULTS))
    if unknown or args.rounds < 1 or args.clients < 1 or args.min_runs < 1 or not 0 <= args.crash_share <= 1:
        p.error(
            f"unknown fault(s) {unknown}"
            if unknown
            else "--rounds, --clients, --min-runs >= 1; 0 <= --crash-share <= 1"
        )
    return args


class Suite:
    """The servers, the processes and the faults of one run of the suite."""

    def __init__(self, args: argparse.Namespace, pg: PostgresServer, rd: RedisServer, log_dir: Path) -> None:
        self.say = progress("verify")
        version = stamp("verify")
        env = processes.child_env(
            {k: v for k, v in os.environ.items() if k not in processes.FAULT_VARS},
            {
                **pg.env("kodo_verify"),
                "KODO_BROKER_URL": rd.url(),
                "KODO_APP_VERSION": version,
                "OC_MODE": "replay",
                "SBX_MODE": "mock",
                "KODO_SCHEDULE_TICK_MS": "0",
                "WF_SLEEP_MS": str(DEMO_SLEEP_MS),
                "PROMETHEUS_MULTIPROC_DIR": None,
            },
        )
        self.settings = Settings.from_env(env)
        self.pg, self.rd = pg, rd
        self.stack = Stack(env, processes.free_port(), processes.free_port(), log_dir, "verify", self.say)
        self.db = SqlReader(self.settings)
        self.producer = producer_app(self.settings)
        self.rng = random.Random(args.seed)
        self.slowest = ""  # the workflow that recovered last after the latest fault
        self.crashes: list[str] = []  # processes that exited without being killed by a fault

    def count(self, query: str) -> int:
        return int(next(iter(self.db.sql(query, ())[0].values())))

    def live(self) -> dict[str, int]:
        """The workflows in flight: id -> their durable sleep's wake-up time (epoch ms), else 0."""
        rows = self.db.sql(
            "SELECT workflow_uuid, CASE WHEN wait_kind = 'sleep' THEN wake_at_epoch_ms END AS wake "
            f"FROM dbos.workflow_status WHERE status IN {LIVE}",
            (),
        )
        return {str(r["workflow_uuid"]): int(r["wake"] or 0) for r in rows}

    def lateness_ms(self, live: dict[str, int], since: int, timeout: float) -> int | None:
        """How long after `since` (or after its own wake-up time, if later) the last of `live` became
        terminal, waiting up to `timeout` s for all of them; None if some did not."""
        if not live:
            return 0
        deadline = time.monotonic() + timeout
        while True:
            rows = self.db.sql(
                "SELECT workflow_uuid, status, updated_at FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
                (list(live),),
            )
            if all(r["status"] not in ("PENDING", "ENQUEUED") for r in rows):
                late = {
                    str(r["workflow_uuid"]): max(
                        int(r["updated_at"]) - max(since, live[str(r["workflow_uuid"])]), 0
                    )
                    for r in rows
                }
                self.slowest = max(late, key=lambda k: late[k])
                return late[self.slowest]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def revive(self) -> None:
        """Start again, and count, any process that exited on its own (the suite expects none:
        `mise run start`'s supervisor would restart it, but it is a defect)."""
        for name in PROCESSES:
            proc = self.stack.procs.get(name)
            if proc is not None and not proc.running():
                self.crashes.append(name)
                self.say(f"{name} exited on its own (log {proc.log}); starting it again")
                self.stack.start((name,))

    def inject(self, kind: str) -> int:
        """Inject one fault; returns when it ended (epoch ms)."""
        if kind in ("kill-intent", "kill-sbx"):
            name = kind.removeprefix("kill-")
            self.stack.kill9((name,))
            return self.stack.start((name,))
        if kind == "pg-restart":
            self.pg.restart(down_seconds=DOWN_S)
        elif kind == "redis-restart":
            self.rd.restart(down_seconds=DOWN_S)
        elif kind == "redis-flush":
            self.rd.flushall()
        elif kind == "duplicates":
            rows = self.db.sql("SELECT workflow_uuid, queue_name FROM dbos.workflow_status", ())
            for r in rows * 2:
                self.producer.send_task(RUN_WORKFLOW_TASK, args=[r["workflow_uuid"]], queue=r["queue_name"])
        return processes.now_ms()

    def run_fault(self, kind: str, t0: float) -> Fault:
        self.revive()
        fault = Fault(kind, time.monotonic() - t0)
        began = processes.now_ms()
        ended = self.inject(kind)
        fault.down_s = (ended - began) / 1000
        live = self.live()
        self.slowest = ""
        fault.in_flight = len(live)
        late = self.lateness_ms(live, ended, SETTLE_S)
        fault.recovery_s = None if late is None else late / 1000
        recovery = "NOT RECOVERED" if fault.recovery_s is None else f"{fault.recovery_s:.2f}s"
        self.say(
            f"{kind}: down {fault.down_s:.2f}s; {fault.in_flight} workflows in flight when it ended, "
            f"all terminal {recovery} after it "
            f"(target {fault.target_s:g}s) {'ok' if fault.ok else 'MISSED'}"
            + (f"; last: {self.slowest}" if self.slowest and not fault.ok else "")
        )
        return fault


def summarize(faults: list[Fault], tally: Tally, suite: Suite) -> tuple[list[str], bool]:
    lines = ["faults injected:"]
    for kind in dict.fromkeys(f.kind for f in faults):
        of = [f for f in faults if f.kind == kind]
        rec = [f.recovery_s for f in of if f.recovery_s is not None]
        p50 = f"{statistics.median(rec):.2f}s" if rec else "n/a"
        worst = "NOT RECOVERED" if len(rec) < len(of) else f"{max(rec):.2f}s"
        down = statistics.median(f.down_s for f in of)
        lines.append(
            f"  {kind:<14} n={len(of)} down p50={down:.2f}s recovery p50={p50} max={worst} target={of[0].target_s:g}s "
            f"-> {'ok' if all(f.ok for f in of) else 'MISSED'}"
        )
    runs = suite.db.sql("SELECT id, status FROM app.runs WHERE id = ANY(%s)", (list(tally.intent_runs),))
    not_ok = [f"{r['id']}={r['status']}" for r in runs if r["status"] != "succeeded"]
    demos = suite.db.sql(
        "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
        (tally.crashdemos,),
    )
    not_ok += [f"{d['workflow_uuid']}={d['status']}" for d in demos if d["status"] != "SUCCESS"]
    marks = int(
        suite.db.sql("SELECT count(*) AS n FROM app.marks WHERE run_id = ANY(%s)", (tally.crashdemos,))[0][
            "n"
        ]
    )
    duplicates = {name: suite.count(q) for name, q in ORACLES.items()}
    for r in suite.db.sql(STUCK, ([x.split("=")[0] for x in not_ok[:5]],) * 2):
        lines.append("  not terminal: " + " ".join(f"{k}={v}" for k, v in r.items()))
    lines.append(
        f"runs: intent={len(tally.intent_runs)} crashdemo={len(tally.crashdemos)} "
        f"not terminal as expected={len(not_ok)}{' ' + ' '.join(not_ok[:5]) if not_ok else ''} "
        f"crashdemo marks={marks}/{2 * len(tally.crashdemos)}"
    )
    lines.append(
        f"processes that exited on their own: {len(suite.crashes)} {' '.join(suite.crashes)}".rstrip()
    )
    lines.append(
        f"clients: requests={tally.requests} retried={tally.retried} lost={tally.lost} refused={len(tally.refused)}"
        + (f" first refused: {tally.refused[0]}" if tally.refused else "")
    )
    lines.append("duplicates: " + " ".join(f"{k}={v}" for k, v in duplicates.items()))
    ok = (
        all(f.ok for f in faults)
        and not not_ok
        and len(runs) == len(tally.intent_runs)
        and len(demos) == len(tally.crashdemos)
        and marks == 2 * len(tally.crashdemos)
        and tally.lost == 0
        and not suite.crashes
        and not tally.refused
        and not any(duplicates.values())
    )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    args.seed = seed
    kinds = args.faults.split(",")
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="kodo-verify-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    say = progress("verify")
    say("starting private Postgres and Redis servers")
    with PostgresServer() as pg, RedisServer() as rd:
        pg.create_database("kodo_verify")
        suite = Suite(args, pg, rd, log_dir)
        migrate.upgrade(suite.settings.database_url)
        plan = [k for _ in range(args.rounds) for k in suite.rng.sample(kinds, len(kinds))]
        say(
            f"postgres :{pg.port}, redis :{rd.port}, seed {seed}, {args.clients} clients, at least "
            f"{args.min_runs} workflows, faults {len(plan)}: {','.join(plan)}; logs in {log_dir}"
        )
        tally, stop = Tally(), threading.Event()
        faults: list[Fault] = []
        try:
            with processes.signals_interrupt():
                suite.stack.start(PROCESSES)
                say(f"stack up: API {suite.stack.api_url}, admin {suite.stack.admin_url}")
                t0 = time.monotonic()
                threads = run_clients(
                    suite.stack.api_url,
                    tally,
                    stop,
                    clients=args.clients,
                    minimum=args.min_runs,
                    crash_share=args.crash_share,
                    seed=seed,
                )
                for kind in plan:
                    time.sleep(suite.rng.uniform(0.5, 2.5))
                    faults.append(suite.run_fault(kind, t0))
                stop.set()
                say("faults done; the clients finish their work")
                for t in threads:
                    t.join(timeout=120)
                suite.revive()
                suite.lateness_ms(suite.live(), processes.now_ms(), SETTLE_S)
                lines, ok = summarize(faults, tally, suite)
        except KeyboardInterrupt:
            stop.set()
            say("interrupted; stopping every process")
            return 130
        finally:
            stop.set()
            suite.stack.stop()
            suite.db.close()
    for line in lines:
        print(line, flush=True)
    print(
        f"verify: {len(faults)} faults, {len(tally.intent_runs) + len(tally.crashdemos)} workflows -> "
        f"{'PASS' if ok else 'FAIL'}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
