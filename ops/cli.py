"""`kodo` / `python -m ops`: migrate, reset schemas, run the reconciler, inspect and steer workflows.

Prints JSON or short lines and nothing else; exit code 0 on success, 1 on a kodo error, 2 on usage.

`kodo workflow list|status|steps` and `kodo ops list-failed|cancel-batch|resume-batch|fork-batch`
are the ops plane (contract-api §9) on the command line: they call the same `OpsService` as the
`/api/ops/wf*` routes, so their output has the same shapes (functionId from 0) and every accepted
cancel, resume or fork writes the same audit artifact. The batch commands read workflow ids from
stdin, one per line (blank lines and `#` comments are skipped), print one line per id, and exit 1
if any id failed. The older `status|steps|cancel|resume|fork` print the engine's raw rows and are
not audited (`fork --step` counts function ids from 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from kodo.config import Settings
from kodo.errors import KodoError


def _runtime() -> Any:
    from kodo.runtime import Runtime

    return Runtime.build()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from kodo.db import migrate  # Alembic and SQLAlchemy: loaded only by the commands that migrate

    migrate.upgrade(settings.database_url)
    print(f"migrations applied to {settings.database_url.rsplit('/', 1)[-1]}")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from kodo.db import migrate

    migrate.reset_schema(settings.database_url, args.schema)
    print(f"schema {args.schema} reset and migrations re-applied")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    # The migrations run in a child process (`python -m ops migrate`): Alembic and SQLAlchemy stay out
    # of this long-lived one (37 MiB of its 85 when they were loaded here).
    migrated = subprocess.run(
        [sys.executable, "-m", "ops", "migrate"], stdout=subprocess.DEVNULL, check=False
    )
    if migrated.returncode != 0:
        print(f"reconciler: the migrations failed (exit {migrated.returncode})", file=sys.stderr)
        return 1
    runtime = _runtime()
    rec = runtime.reconciler()
    if args.once:
        rec.write_env_limits()
        print(json.dumps(rec.sweep().__dict__))
        return 0
    if args.admin_port:
        _serve_admin(runtime, args.admin_host, args.admin_port)
    signal.signal(signal.SIGTERM, lambda *_: rec.stop(0))
    print(f"reconciler running (version {settings.app_version}); Ctrl-C to stop", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        rec.run_forever()
    return 0


def _serve_admin(runtime: Any, host: str, port: int) -> None:
    import threading

    from werkzeug.serving import make_server

    from kodo.api.admin import create_admin_app

    server = make_server(host, port, create_admin_app(runtime), threaded=True)
    threading.Thread(target=server.serve_forever, name="kodo-admin", daemon=True).start()
    print(f"admin server on http://{host}:{port} (/healthz, /queues)", flush=True)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(_runtime().client.get(args.workflow_id), default=str))
    return 0


def cmd_steps(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(_runtime().client.steps(args.workflow_id), default=str))
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    _runtime().client.cancel(args.workflow_id)
    print(f"cancelled {args.workflow_id}")
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    _runtime().client.resume(args.workflow_id)
    print(f"resumed {args.workflow_id}")
    return 0


def cmd_fork(args: argparse.Namespace, settings: Settings) -> int:
    new_id = _runtime().client.fork(args.workflow_id, args.step, app_version=args.app_version)
    print(json.dumps({"forkedWorkflowID": new_id}))
    return 0


# ---- the ops plane: kodo workflow ... / kodo ops ... -------------------------------------------------

STATUSES = ("PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
FAILED = ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


def _ops() -> Any:
    from kodo.intent.ops import OpsService

    return OpsService(_runtime())


def _limit(text: str) -> int:
    from kodo.intent.ops import MAX_LIMIT

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}: {text!r}")
    return value


def _step(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a functionId >= 1 (counted from 0): {text!r}")
    return int(text)


def cmd_workflow_list(args: argparse.Namespace, settings: Settings) -> int:
    statuses = [args.status] if args.status else None
    rows = _ops().list_workflows(statuses=statuses, name=args.name, limit=args.limit)
    print(json.dumps(rows))
    return 0


def cmd_workflow_status(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(_ops().get(args.workflow_id)))
    return 0


def cmd_workflow_steps(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(_ops().steps(args.workflow_id)))
    return 0


def cmd_list_failed(args: argparse.Namespace, settings: Settings) -> int:
    for row in _ops().list_workflows(statuses=FAILED, name=args.name, limit=args.limit):
        print(row["workflowID"])
    return 0


def _workflow_ids() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip() and not line.strip().startswith("#")]


def _batch(verb: str, act: Callable[[str], str]) -> int:
    """Run `act` on every id of stdin: one line per id; 1 if any failed (the others still run)."""
    ids = _workflow_ids()
    if not ids:
        print("no workflow ids on stdin", file=sys.stderr)
    failed = 0
    for wid in ids:
        try:
            print(f"{verb} workflow {wid}: {act(wid)}", flush=True)
        except KodoError as exc:
            failed += 1
            print(f"{verb} workflow {wid}: failed: {exc.message}", flush=True)
    if failed:
        print(f"{failed} of {len(ids)} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_cancel_batch(args: argparse.Namespace, settings: Settings) -> int:
    ops = _ops()

    def act(wid: str) -> str:
        ops.cancel(wid, actor=args.actor, reason=args.reason)
        return "cancelled"

    return _batch("Cancelling", act)


def cmd_resume_batch(args: argparse.Namespace, settings: Settings) -> int:
    ops = _ops()

    def act(wid: str) -> str:
        ops.resume(wid, actor=args.actor, reason=args.reason)
        return "resumed"

    return _batch("Resuming", act)


def cmd_fork_batch(args: argparse.Namespace, settings: Settings) -> int:
    ops = _ops()

    def act(wid: str) -> str:
        new_id = ops.fork(wid, args.step, app_version=args.version, actor=args.actor, reason=args.reason)
        return f"forked at step {args.step} as {new_id}"

    return _batch("Forking", act)


def _add_actor_reason(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--actor", default=None, help="who acts (recorded in the audit artifact; default: omitted)"
    )
    p.add_argument("--reason", default=None, help="why (recorded in the audit artifact; default: omitted)")


def _add_ops_plane(sub: Any) -> None:
    w = sub.add_parser("workflow", help="read workflows as the ops plane shows them (functionId from 0)")
    wsub = w.add_subparsers(dest="workflow_command", required=True)
    wl = wsub.add_parser("list", help="workflows newest first, as JSON (OpsWorkflowSummary[])")
    wl.add_argument("--status", choices=STATUSES, default=None, help="only this engine status")
    wl.add_argument("--name", default=None, help="only this workflow name (`run` or `IntentWorkflow.run`)")
    wl.add_argument("--limit", type=_limit, default=20, help="at most this many (1-200, default 20)")
    wl.set_defaults(fn=cmd_workflow_list)
    ws = wsub.add_parser("status", help="one workflow's summary and audit trail, as JSON")
    ws.add_argument("workflow_id")
    ws.set_defaults(fn=cmd_workflow_status)
    wt = wsub.add_parser("steps", help="one workflow's recorded operations, as JSON (WorkflowStepSummary[])")
    wt.add_argument("workflow_id")
    wt.set_defaults(fn=cmd_workflow_steps)

    o = sub.add_parser(
        "ops", help="the operators' kit: list failures, cancel/resume/fork ids read from stdin"
    )
    osub = o.add_subparsers(dest="ops_command", required=True)
    lf = osub.add_parser("list-failed", help="ids of ERROR and MAX_RECOVERY_ATTEMPTS_EXCEEDED workflows")
    lf.add_argument("--name", default=None, help="only this workflow name")
    lf.add_argument("--limit", type=_limit, default=200, help="at most this many, newest first (default 200)")
    lf.set_defaults(fn=cmd_list_failed)
    cb = osub.add_parser("cancel-batch", help="cancel the workflow ids on stdin (one per line), audited")
    _add_actor_reason(cb)
    cb.set_defaults(fn=cmd_cancel_batch)
    rb = osub.add_parser("resume-batch", help="resume the workflow ids on stdin (one per line), audited")
    _add_actor_reason(rb)
    rb.set_defaults(fn=cmd_resume_batch)
    fb = osub.add_parser(
        "fork-batch", help="fork the workflow ids on stdin at STEP (a functionId, from 0), audited"
    )
    fb.add_argument("step", type=_step, help="reuse the operations before this functionId (>= 1)")
    fb.add_argument("version", nargs="?", default=None, help="application version of the forks")
    _add_actor_reason(fb)
    fb.set_defaults(fn=cmd_fork_batch)


# ---- kodo queue show|set|reset: flow control limits in Postgres ----------------------------------

# flag -> the limit it sets (kodo.db.limits.QUEUE_FIELDS / PARTITION_FIELDS)
_LIMIT_FLAGS = (
    ("--concurrency", "concurrency", "workflows running at once (0 pauses admission; none: no cap)"),
    ("--worker-concurrency", "worker_concurrency", "at once on one worker (celery worker process group)"),
    ("--rate", "rate", "admissions per window, N/SECONDS (e.g. 100/60; none: no rate limit)"),
    ("--partition-concurrency", "partition_concurrency", "default cap of each partition"),
    ("--partition-worker-concurrency", "partition_worker_concurrency", "each partition, on one worker"),
    ("--partition-rate", "partition_rate", "default rate of each partition, N/SECONDS"),
    ("--priority", "priority", "on/off: admit by priority (lower first), else in arrival order"),
    ("--weight", "weight", "with --partition: its turns in the round-robin (default 1)"),
)


def _print_limits(rows: list[dict[str, Any]], queue: str | None, as_json: bool) -> None:
    rows = [r for r in rows if queue is None or r["queue"] == queue]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"{queue or 'no queue'}: no limits (every runnable workflow is dispatched at once)")
    rows = [{k: "none" if v is None else v for k, v in r.items()} for r in rows]
    for r in rows:
        print(
            f"{r['queue']} ({r['source']}): concurrency {r['concurrency']}, worker {r['workerConcurrency']}, "
            f"rate {r['rate']}; per partition: concurrency {r['partitionConcurrency']}, "
            f"worker {r['partitionWorkerConcurrency']}, rate {r['partitionRate']}; "
            f"priority {'on' if r['priorityEnabled'] else 'off'}"
        )
        print(
            f"  now: {r['running']} running, {r['waiting']} waiting, {r['admittedInWindow']} admitted in the window"
        )
        for p in r["partitions"]:
            own = ", ".join(
                f"{k} {p[k]}" for k in ("concurrency", "workerConcurrency", "rate") if p[k] is not None
            )  # a partition's own limits only (the queue's defaults apply to the others)
            print(
                f"  partition {p['partition'] or '(none)'!s}: weight {p['weight']}"
                f"{', ' + own if own else ''}; {p['running']} running, {p['waiting']} waiting"
            )


def cmd_queue_show(args: argparse.Namespace, settings: Settings) -> int:
    _print_limits(_runtime().show_limits(), args.queue, args.json)
    return 0


def cmd_queue_set(args: argparse.Namespace, settings: Settings) -> int:
    raw = {field: getattr(args, field) for _, field, _ in _LIMIT_FLAGS if getattr(args, field) is not None}
    rows = _runtime().set_limits(args.queue, args.partition, raw)
    _print_limits(rows, args.queue, args.json)
    return 0


def cmd_queue_reset(args: argparse.Namespace, settings: Settings) -> int:
    rows = _runtime().reset_limits(args.queue, args.partition)
    _print_limits(rows, args.queue, args.json)
    return 0


def _add_queue(sub: Any) -> None:
    q = sub.add_parser(
        "queue",
        help="flow control: show or change a queue's limits at run time (workers apply them within a second)",
    )
    qsub = q.add_subparsers(dest="queue_command", required=True)
    show = qsub.add_parser("show", help="the limits of the limited queues, with what uses them now")
    show.add_argument("queue", nargs="?", default=None, help="only this queue")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(fn=cmd_queue_show)
    qs = qsub.add_parser(
        "set",
        help="set limits of QUEUE (or, with --partition, one partition's own); kept until `queue reset`",
    )
    qs.add_argument("queue", help="intentQ, sbxQ or controlQ")
    qs.add_argument(
        "--partition", default=None, help="one partition (queuePartitionKey): its own limits and weight"
    )
    for flag, field, hlp in _LIMIT_FLAGS:
        qs.add_argument(
            flag, dest=field, default=None, metavar="N" if "rate" not in field else "N/S", help=hlp
        )
    qs.add_argument("--json", action="store_true", help="print the result as JSON")
    qs.set_defaults(fn=cmd_queue_set)
    qr = qsub.add_parser("reset", help="back to the environment's limits (or drop a partition's own)")
    qr.add_argument("queue")
    qr.add_argument("--partition", default=None, help="drop only this partition's own limits")
    qr.add_argument("--json", action="store_true", help="print the result as JSON")
    qr.set_defaults(fn=cmd_queue_reset)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kodo", description="kodo operator commands")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if missing and apply migrations").set_defaults(
        fn=cmd_migrate
    )
    r = sub.add_parser("reset", help="drop schema app or dbos and re-apply migrations")
    r.add_argument("schema", choices=["app", "dbos"])
    r.set_defaults(fn=cmd_reset)
    rc = sub.add_parser("reconcile", help="run the reconciler (timers, dead leases, lost messages)")
    rc.add_argument("--once", action="store_true", help="one pass, print its counts, exit")
    rc.add_argument("--admin-port", type=int, default=0, help="also serve the admin API on this port")
    rc.add_argument("--admin-host", default="127.0.0.1", help="admin bind address (default 127.0.0.1)")
    rc.set_defaults(fn=cmd_reconcile)
    for name, fn, hlp in (
        ("status", cmd_status, "print a workflow's status row"),
        ("steps", cmd_steps, "print a workflow's recorded operations"),
        ("cancel", cmd_cancel, "cancel (stops at the next step boundary)"),
        ("resume", cmd_resume, "resume a cancelled workflow from its checkpoints"),
    ):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("workflow_id")
        sp.set_defaults(fn=fn)
    f = sub.add_parser("fork", help="fork a workflow from operation N (copies outputs before N)")
    f.add_argument("workflow_id")
    f.add_argument("--step", "-S", type=int, required=True)
    f.add_argument("--app-version", "-v", default=None)
    f.set_defaults(fn=cmd_fork)
    _add_ops_plane(sub)
    _add_queue(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.fn(args, settings))
    except KodoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
