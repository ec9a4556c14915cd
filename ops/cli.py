"""`kodo` / `python -m ops`: migrate, reset schemas, run the reconciler, inspect and steer workflows.

Prints JSON or short lines and nothing else; exit code 0 on success, 1 on a kodo error, 2 on usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from kodo.config import Settings
from kodo.db import migrate
from kodo.errors import KodoError


def _runtime() -> Any:
    from kodo.runtime import Runtime

    return Runtime.build()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate.upgrade(settings.database_url)
    print(f"migrations applied to {settings.database_url.rsplit('/', 1)[-1]}")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    migrate.reset_schema(settings.database_url, args.schema)
    print(f"schema {args.schema} reset and migrations re-applied")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    migrate.upgrade(settings.database_url)
    runtime = _runtime()
    rec = runtime.reconciler()
    if args.once:
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
