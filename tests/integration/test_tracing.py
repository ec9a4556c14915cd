"""Tracing end to end: real workers export spans over OTLP/HTTP to a local receiver that decodes them
(`ops.otlp.Receiver`); run_steps carries the step spans' ids; a required receiver that does not answer
stops start-up."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kodo.runtime import Runtime
from ops import processes
from ops.http_client import wait_healthy
from ops.otlp import Receiver, SpanRecord
from ops.procfile import celery_worker_argv, procfile_argv
from tests.support.intent import start_run, wait_run

Sql = Callable[..., list[dict[str, Any]]]
Worker = Callable[..., Any]
SERVER, PRODUCER, CONSUMER = 2, 4, 5  # opentelemetry.proto Span.SpanKind
PRODUCT_STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def traced_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url,
        "OTEL_SERVICE_NAME": "kodo-test-worker",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's own knobs: export within 0.1 s, not 5 s
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        **extra,
    }


def by_id(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {s.span_id: s for s in spans}


def test_step_spans_under_the_celery_task_span_and_their_ids_on_run_steps(
    rt: Runtime, sql: Sql, start_worker: Worker, receiver: Receiver
) -> None:
    start_worker(env=traced_env(receiver))
    hooks = {"testHooks": {"tests": ["a.ts", "b.ts"], "testCommand": "echo ok"}}
    wid, run_id = start_run(rt, sql, "traced", constraints=hooks, approved=True, partition_key="tenant-tr")
    wait_run(sql, run_id, "succeeded")
    children = [r["workflow_uuid"] for r in sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s", (wid,)
    )]  # fmt: skip
    assert len(children) == 2

    def complete(spans: list[SpanRecord]) -> bool:
        """Every step span of the run has arrived, and so has each one's chain of parents (a parent
        ends, and is exported, after its children)."""
        index = by_id(spans)
        steps = [s for s in spans if s.name in (*PRODUCT_STEPS, "IntentWorkflow.executeTask")]
        names = {(s.name, s.attributes.get("workflowID")) for s in steps}
        if not all((n, wid) in names for n in PRODUCT_STEPS) or not all(
            ("IntentWorkflow.executeTask", c) in names for c in children
        ):
            return False
        for step in steps:
            span = step
            while span.parent_span_id is not None:
                if span.parent_span_id not in index:
                    return False
                span = index[span.parent_span_id]
        return True

    receiver.wait_for("the run's step spans", complete)
    spans = receiver.spans_now()
    index = by_id(spans)

    # One span per operation, with the walkthrough's attributes, each a child of the Celery task span.
    # (The parent runs in several deliveries: each replays the steps before its wait point, and a
    # replay has its span too, `step.replayed` true; one span per step ran it.)
    for name in PRODUCT_STEPS:
        [s] = [
            s
            for s in spans
            if s.name == name and s.attributes["workflowID"] == wid and not s.attributes["step.replayed"]
        ]
        assert s.service == "kodo-test-worker"
        assert isinstance(s.attributes["step.functionID"], int) and s.attributes["step.functionID"] >= 1
        assert (s.attributes["attempt"], s.attributes["step.kind"], s.attributes["kodo.outcome"]) == (
            1,
            "transaction",
            "ok",
        )
        task = index[s.parent_span_id or ""]
        assert (task.name, task.kind, task.trace_id) == ("run/kodo.run_workflow", CONSUMER, s.trace_id)
        assert task.attributes["workflowID"] == wid
        assert task.attributes["workflowName"] == "IntentWorkflow.run"

    # The sandbox tasks: their step spans sit under their own task span, whose parent is the publish
    # span of the parent workflow's worker (the trace context travels in the Celery message).
    # (The children are started in one batch: one `kodo.start_children` operation; its span is the
    # parent of every publish.)
    [start_children] = [
        s
        for s in spans
        if s.name == "kodo.start_children"
        and s.attributes["workflowID"] == wid
        and not s.attributes["step.replayed"]
    ]
    for child in children:
        attempts = [
            s for s in spans if s.name == "IntentWorkflow.executeTask" and s.attributes["workflowID"] == child
        ]
        assert [s.attributes["attempt"] for s in attempts] == [1]
        task = index[attempts[0].parent_span_id or ""]
        assert (
            task.name == "run/kodo.run_workflow"
            and task.attributes["workflowName"] == "IntentWorkflow.taskWorkflow"
        )
        publish = index[task.parent_span_id or ""]
        assert (publish.name, publish.kind) == ("apply_async/kodo.run_workflow", PRODUCER)
        assert publish.parent_span_id == start_children.span_id
        assert task.trace_id == start_children.trace_id

    # run_steps carries, per step, the ids of the span of the operation that wrote it.
    rows = sql("SELECT step_id, trace_id, span_id FROM app.run_steps WHERE run_id = %s", (run_id,))
    assert sorted(r["step_id"] for r in rows) == sorted(PRODUCT_STEPS)
    for r in rows:
        s = index[r["span_id"]]
        assert (s.name, s.trace_id, s.attributes["workflowID"]) == (r["step_id"], r["trace_id"], wid)

    # The structured step records went to the logs endpoint, tied to their spans.
    records = [
        x for x in receiver.logs if x.attributes.get("event") == "step" and x.attributes["workflowID"] == wid
    ]
    assert {x.attributes["step_name"] for x in records} >= set(PRODUCT_STEPS)
    assert all(x.span_id in index for x in records if x.attributes["step_name"] in PRODUCT_STEPS)


def test_one_trace_from_the_api_request_to_the_worker(
    sql: Sql, start_worker: Worker, receiver: Receiver, tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """The API (gunicorn, as the Procfile runs it) traces the request and the publish; the worker's
    task span continues that trace."""
    start_worker(env=traced_env(receiver))
    port = processes.free_port()
    env = processes.child_env(
        worker_env, {**traced_env(receiver, OTEL_SERVICE_NAME="kodo-test-api"), "KODO_API_PORT": str(port)}
    )
    api = processes.spawn("api", procfile_argv("api"), env, tmp_path / "api.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/healthz", api, 60)
        intent = requests.post(
            f"{base}/intents", json={"goal": "traced api", "inputs": {}, "constraints": {}}, timeout=10
        )
        intent_id = intent.json()["intentId"]
        run = requests.post(
            f"{base}/intents/{intent_id}/run", json={"queuePartitionKey": "tenant-api"}, timeout=10
        )
        assert run.status_code == 202, run.text

        def linked(spans: list[SpanRecord]) -> bool:
            index = by_id(spans)
            return any(
                s.name == "CompileST" and s.attributes.get("workflowID") == intent_id
                and (task := index.get(s.parent_span_id or "")) is not None
                and (publish := index.get(task.parent_span_id or "")) is not None
                and publish.parent_span_id in index
                for s in spans
            )  # fmt: skip

        receiver.wait_for("the run's trace from the API to CompileST", linked)
        index = by_id(receiver.spans_now())
        [compile_span] = [
            s for s in index.values() if s.name == "CompileST" and s.attributes["workflowID"] == intent_id
        ]
        task = index[compile_span.parent_span_id or ""]
        publish = index[task.parent_span_id or ""]
        request = index[publish.parent_span_id or ""]
        assert (publish.name, publish.service) == ("apply_async/kodo.run_workflow", "kodo-test-api")
        assert request.kind == SERVER and request.service == "kodo-test-api"
        status = request.attributes.get(
            "http.response.status_code", request.attributes.get("http.status_code")
        )
        assert request.name.startswith("POST ") and status == 202
        assert request.parent_span_id is None
        assert {compile_span.trace_id, task.trace_id, publish.trace_id} == {request.trace_id}
        paths = {s.attributes.get("url.path", s.attributes.get("http.target")) for s in index.values()}
        assert f"/intents/{intent_id}/run" in paths and "/healthz" not in paths  # health checks untraced
    finally:
        api.stop(10)


def test_without_tracing_run_steps_carry_no_ids(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    start_worker()
    _, run_id = start_run(rt, sql, "untraced", approved=True)
    wait_run(sql, run_id, "succeeded")
    rows = sql("SELECT trace_id, span_id FROM app.run_steps WHERE run_id = %s", (run_id,))
    assert len(rows) == 4 and all(r["trace_id"] is None and r["span_id"] is None for r in rows)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("worker", celery_worker_argv("intentQ", 1, "otlp-required@%h")),
        ("api", [sys.executable, "-c", "from kodo.api import create_app; create_app(); print('started')"]),
        ("reconciler", [sys.executable, "-m", "ops", "reconcile", "--once"]),
    ],
)
def test_a_required_receiver_that_does_not_answer_stops_start_up(
    name: str, argv: list[str], tmp_path: Path, worker_env: dict[str, str]
) -> None:
    dead = _dead_url()
    env = processes.child_env(worker_env, {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "OTLP_REQUIRED": "1"})
    proc = processes.spawn(name, argv, env, tmp_path / f"{name}.log")
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.running():
            proc.kill9()
    out = proc.text()
    assert code != 0, out
    assert f"OTLP receiver unreachable at {dead}/v1/traces" in out
    assert "started" not in out.splitlines()


def test_a_required_receiver_that_answers_lets_the_worker_start(
    tmp_path: Path, worker_env: dict[str, str], receiver: Receiver, start_worker: Worker
) -> None:
    w = start_worker(env={**traced_env(receiver), "OTLP_REQUIRED": "1"}, queues="controlQ")
    assert w.proc.poll() is None
    assert receiver.requests >= 2  # the start-up probes of /v1/traces and /v1/logs
    assert os.environ.get("OTLP_REQUIRED") is None  # the test process itself stays untraced


def test_the_otlp_smoke_passes_and_fails_hard_on_an_unreachable_required_receiver(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """`mise run otlp:smoke` (python -m ops.otlpsmoke), against the test database and broker."""
    argv = [sys.executable, "-m", "ops.otlpsmoke", f"--port={processes.free_port()}"]
    ok = processes.spawn("smoke", argv, processes.child_env(worker_env), tmp_path / "smoke.log")
    assert ok.wait(timeout=150) == 0, ok.text()
    out = ok.text()
    assert "start-up guard: a worker with OTLP_REQUIRED=1 refused to start" in out
    assert "span OTLPSmokeST" in out and "under run/kodo.run_workflow" in out and "passed" in out

    dead = _dead_url()
    env = processes.child_env(worker_env, {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "OTLP_REQUIRED": "1"})
    failed = processes.spawn("smoke-dead", [*argv, "--no-receiver"], env, tmp_path / "smoke-dead.log")
    assert failed.wait(timeout=60) == 1
    assert f"OTLP receiver unreachable at {dead}/v1/traces" in failed.text()
