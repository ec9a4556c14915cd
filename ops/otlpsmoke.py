"""`python -m ops.otlpsmoke` (`mise run otlp:smoke`): tracing reaches a receiver, and a required
receiver that does not answer stops start-up.

1. Tracing is forced on: without a configured endpoint the smoke exports to a local mock receiver
   (`ops.otlp.Receiver`, on 127.0.0.1:4318 when that port is free, as the original's task did). A
   configured endpoint on 127.0.0.1:<port> with nothing listening there gets the mock receiver too,
   unless `--no-receiver`.
2. Every endpoint is probed (POST, 1 s): one that does not answer aborts with
   `OTLP receiver unreachable at <url>`.
3. The start-up guard: a Celery worker started with OTLP_REQUIRED=1 and an endpoint nobody listens on
   must refuse to start, with that message.
4. A real worker runs `OTLPSmoke.run`, whose one step OTLPSmokeST writes an app.run_steps row with
   the trace and span ids of its span. Without both ids the smoke fails under OTLP_REQUIRED=1 (or
   DBOS_ENABLE_OTLP=true) and only warns otherwise. With the mock receiver it also checks the span
   arrived, under its Celery task span.

Exit status: 0 when it passed, 1 when it failed, 130 when interrupted. Its processes are always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from kodo import telemetry
from kodo.config import Settings
from kodo.db import migrate
from kodo.demo import otlpsmoke
from kodo.errors import ConfigError
from kodo.runtime import Runtime
from ops import processes, soak
from ops.otlp import Receiver
from ops.procfile import celery_worker_argv

say = soak.progress("otlp:smoke")
UNREACHABLE = "OTLP receiver unreachable at"


class SmokeFailedError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops.otlpsmoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=4318, help="the mock receiver's port (default 4318)")
    p.add_argument("--no-receiver", action="store_true", help="never start the mock receiver")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each stage (default 60)")
    return p


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_free_port(urls: tuple[str, ...]) -> int | None:
    """The port of the configured local endpoints when nothing listens there (the mock's place)."""
    ports = {urlsplit(u).port for u in urls if urlsplit(u).hostname in ("127.0.0.1", "localhost")}
    if len(ports) == 1 and None not in ports:
        port = ports.pop()
        assert port is not None
        return port if processes.port_free(port) else None
    return None


def _receiver(args: argparse.Namespace, env: dict[str, str], stack: contextlib.ExitStack) -> Receiver | None:
    obs = Settings.from_env(env).observability
    if not obs.tracing:
        port = args.port if processes.port_free(args.port) else 0
        receiver = stack.enter_context(Receiver(port=port))
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.base_url
        say(f"no OTLP endpoint configured: exporting to a mock receiver at {receiver.base_url}")
        return receiver
    port = None if args.no_receiver else _local_free_port((*obs.traces_endpoints, *obs.logs_endpoints))
    if port is not None:
        receiver = stack.enter_context(Receiver(port=port))
        say(f"mock receiver on {receiver.base_url} for the configured endpoints")
        return receiver
    return None


def _guard(env: dict[str, str], log_dir: Path, timeout: float) -> None:
    """A worker with OTLP_REQUIRED=1 and an unreachable endpoint must not start."""
    dead = f"http://127.0.0.1:{_closed_port()}"
    overrides: dict[str, str | None] = {
        "OTLP_REQUIRED": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": dead,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": None,
        "DBOS_ENABLE_OTLP": None,
    }
    argv = celery_worker_argv("controlQ", 1, f"otlp-guard-{uuid.uuid4().hex[:6]}@%h")
    proc = processes.spawn("guard", argv, processes.child_env(env, overrides), log_dir / "guard.log")
    try:
        code = proc.wait(timeout)
    except Exception:
        proc.kill9()
        raise SmokeFailedError(
            f"a worker with OTLP_REQUIRED=1 and no receiver at {dead} kept running"
        ) from None
    wanted = f"{UNREACHABLE} {dead}/v1/traces"
    if code == 0 or wanted not in proc.text():
        raise SmokeFailedError(f"the start-up guard did not fire (exit {code}):\n{proc.tail()}")
    say(f"start-up guard: a worker with OTLP_REQUIRED=1 refused to start ({wanted})")


def smoke(args: argparse.Namespace) -> int:
    env = {k: v for k, v in os.environ.items() if k not in processes.FAULT_VARS}
    log_dir = Path(tempfile.mkdtemp(prefix="kodo-otlp-smoke-"))
    with contextlib.ExitStack() as stack:
        receiver = _receiver(args, env, stack)
        stack.callback(telemetry.flush)  # this process's spans (the publish), before the receiver stops
        version = soak.stamp("otlp-smoke")
        env.update({"KODO_APP_VERSION": version, "KODO_WORKFLOW_MODULES": "kodo.demo.otlpsmoke"})
        env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")
        env.setdefault("OTEL_SERVICE_NAME", "kodo-otlp-smoke")
        settings = Settings.from_env(env)
        obs = settings.observability
        required = obs.otlp_required
        for url in (*obs.traces_endpoints, *obs.logs_endpoints):
            telemetry.probe(url)
        say(f"endpoints answer: {', '.join((*obs.traces_endpoints, *obs.logs_endpoints))}")
        migrate.upgrade(settings.database_url)
        _guard(env, log_dir, args.timeout)

        worker = processes.spawn(
            "worker", celery_worker_argv("controlQ", 1, f"otlp-smoke-{version}@%h"), processes.child_env(env),
            log_dir / "worker.log",
        )  # fmt: skip
        stack.callback(worker.stop, 10.0)
        worker.wait_log("ready.", args.timeout)
        rt = Runtime.build(settings)
        run_id = f"otlpsmoke_{uuid.uuid4().hex[:12]}"
        with rt.db.tx() as c:
            otlpsmoke.create_run(c, run_id, run_id)
            started = rt.client.start_txn(c, otlpsmoke.otlp_smoke, (run_id,), {}, workflow_id=run_id)
        rt.client.publish_started(started)
        status = rt.client.wait(run_id, args.timeout)["status"]
        if status != "SUCCESS":
            raise SmokeFailedError(f"{otlpsmoke.SMOKE_WORKFLOW} {run_id} ended {status}:\n{worker.tail()}")
        with rt.db.conn() as c:
            ids = otlpsmoke.read_ids(c, run_id)
        trace_id, span_id = ids or (None, None)
        say(f"run_steps {run_id}/OTLPSmokeST: trace_id={trace_id} span_id={span_id}")
        if not (trace_id and span_id):
            message = "no run_steps row of the smoke carries both trace_id and span_id"
            if required:
                raise SmokeFailedError(message + " (required: OTLP_REQUIRED=1)")
            say(f"WARNING: {message}")
            return 0
        if receiver is not None:
            receiver.wait_for(
                "the smoke step's span", lambda spans: any(s.span_id == span_id for s in spans), args.timeout
            )
            by_id = {s.span_id: s for s in receiver.spans_now()}
            step = by_id[span_id]
            parent = by_id.get(step.parent_span_id or "")
            say(
                f"span {step.name} ({trace_id}/{span_id}, workflowID={step.attributes.get('workflowID')}) "
                f"received, under {parent.name if parent else step.parent_span_id}"
            )
            if step.name != "OTLPSmokeST" or step.trace_id != trace_id:
                raise SmokeFailedError(
                    f"the span with the row's span id is {step.name} in trace {step.trace_id}"
                )
    say("passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        with processes.signals_interrupt():
            return smoke(args)
    except (ConfigError, SmokeFailedError, TimeoutError, processes.ProcessExitedError) as exc:
        print(f"otlp:smoke FAILED after {time.monotonic() - started:.1f}s: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
