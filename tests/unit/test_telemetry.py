"""Tracing and metrics without services: the observability settings, the OTLP probe, the span and
metrics hooks on the in-memory engine, and the doorbell labels Flower shows."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from kodo import clock, telemetry
from kodo import workflow as wf
from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.states import OutcomeKind
from kodo.workflow import context
from tests.support.memstore import Fake, FakeClock, MemorySession, make_engine

T0 = 1_700_000_000_000
SEEN_IDS: dict[str, context.TraceIds] = {}  # operation name -> trace_ids() inside it


def obs(env: dict[str, str]) -> Any:
    return Settings.from_env(env).observability


# ---- settings ----------------------------------------------------------------------------------------


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    o = obs({})
    assert (o.tracing, o.traces_endpoints, o.otlp_required, o.service_name) == (False, (), False, "kodo")


def test_the_base_endpoint_gets_the_signal_path_and_a_signal_endpoint_is_used_as_given() -> None:
    o = obs({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/, https://d"})
    assert o.traces_endpoints == ("http://c:4318/v1/traces", "https://d/v1/traces")
    assert o.logs_endpoints == ("http://c:4318/v1/logs", "https://d/v1/logs")
    o = obs(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1"}
    )
    assert (o.tracing, o.traces_endpoints, o.logs_endpoints) == (
        True,
        ("http://t:1",),
        ("http://c:4318/v1/logs",),
    )
    assert obs({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "DBOS_ENABLE_OTLP": "false"}).tracing is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x"}, "invalid OTLP endpoint URL: ftp://x"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"},
            "invalid OTLP endpoint URL: localhost:4318/v1/traces",
        ),
        (
            {"DBOS_ENABLE_OTLP": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1"},
            "OTLP enabled but missing OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        ),
        ({"OTLP_REQUIRED": "1"}, "OTLP_REQUIRED is set but no OTLP endpoint is"),
        ({"OTLP_REQUIRED": "yes"}, "invalid boolean env value: yes"),
        ({"DBOS_ENABLE_OTLP": "on"}, "invalid boolean env value: on"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "a=1,broken"}, "invalid OTEL_RESOURCE_ATTRIBUTES item: broken"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/kodo-metrics"}, "invalid PROMETHEUS_MULTIPROC_DIR"),
        ({"FLOWER_UNAUTHENTICATED_API": "maybe"}, "invalid boolean env value: maybe"),
    ],
)
def test_bad_observability_values_stop_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_otlp_required_and_dbos_enable_otlp_make_start_up_probe() -> None:
    both = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:1",
    }
    assert obs({**both, "OTLP_REQUIRED": "1"}).otlp_required
    assert obs({**both, "DBOS_ENABLE_OTLP": "true"}).otlp_required
    assert not obs(both).otlp_required


def test_resource_attributes_and_service_name() -> None:
    o = obs(
        {"OTEL_SERVICE_NAME": "kodo-a", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev, team=a%20b"}
    )
    assert (o.service_name, o.resource_attributes) == (
        "kodo-a",
        (("deployment.environment", "dev"), ("team", "a b")),
    )


def test_flower_basic_auth_is_validated_and_never_echoed() -> None:
    assert obs({"FLOWER_BASIC_AUTH": "ops:s3cret,admin:x"}).flower_basic_auth == ("ops:s3cret", "admin:x")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"FLOWER_BASIC_AUTH": "ops:s3cret,nopassword"})
    assert "nopassword" not in str(err.value) and "s3cret" not in str(err.value)


def test_metrics_dir_must_exist(tmp_path: Any) -> None:
    assert obs({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}).metrics_dir == str(tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "https://trace.example/trace/{traceId}/span/{spanId}",
        "http://localhost:16686/trace/{traceId}",
        "https://trace.local/trace",
    ],
)
def test_trace_base_url_takes_an_http_url_with_the_two_placeholders(url: str) -> None:
    assert Settings.from_env({"TRACE_BASE_URL": url}).trace_base_url == url


@pytest.mark.parametrize(
    "url",
    ["ftp://trace/{traceId}", "https://", "trace.example/{traceId}", "https://t/{runId}", "https://t/a b"],
)
def test_a_bad_trace_base_url_stops_start_up(url: str) -> None:
    with pytest.raises(ConfigError, match="invalid trace base url env value"):
        Settings.from_env({"TRACE_BASE_URL": url})


# ---- the start-up probe ------------------------------------------------------------------------------


class _Answer404(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer404)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_accepts_any_http_answer_and_refuses_silence(receiver: str) -> None:
    telemetry.probe(receiver)  # a 404 is still a receiver
    dead = f"http://127.0.0.1:{_closed_port()}/v1/traces"
    with pytest.raises(ConfigError, match=f"OTLP receiver unreachable at {dead}"):
        telemetry.probe(dead)


def test_required_otlp_checks_every_endpoint(receiver: str) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1/logs"
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": dead}
    telemetry.check_endpoints(obs(env))  # not required: nothing is probed
    with pytest.raises(ConfigError, match=f"OTLP receiver unreachable at {dead}"):
        telemetry.check_endpoints(obs({**env, "OTLP_REQUIRED": "1"}))


# ---- the hooks on the in-memory engine ---------------------------------------------------------------


@wf.step(name="tel.compute")
def compute(x: int) -> int:
    SEEN_IDS["tel.compute"] = context.trace_ids()
    return x * 2


@wf.transaction(name="tel.record")
def record(conn: MemorySession, x: int) -> int:
    SEEN_IDS["tel.record"] = context.trace_ids()
    conn.product["x"] = x
    return x


@wf.step(name="tel.flaky", retry=wf.RetryPolicy(max_attempts=2, interval_s=1, backoff=1))
def flaky() -> str:
    if context.step_attempt() == 1:
        raise ValueError("first attempt fails")
    return "ok"


@wf.workflow(name="tel.parent")
def parent(x: int) -> int:
    y = compute(x)
    record(y)
    flaky()
    wf.start_child(child, workflow_id=f"{wf.current_workflow_id()}-c", partition_key="tenant-t")
    return y


@wf.workflow(name="tel.child", queue="sbxQ")
def child() -> str:
    return "done"


@pytest.fixture
def clk(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock(T0)
    monkeypatch.setattr(clock, "now_ms", c)
    return c


@pytest.fixture
def traced() -> Iterator[tuple[Fake, InMemorySpanExporter, trace.Tracer]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fake = make_engine()
    fake.engine.hooks.add(telemetry.SpanHook(provider.get_tracer("test")))
    fake.engine.hooks.add(telemetry.StepMetricsHook())
    SEEN_IDS.clear()
    yield fake, exporter, provider.get_tracer("test.celery")
    provider.shutdown()


def _run_task(tracer: trace.Tracer, fake: Fake, wid: str) -> tuple[OutcomeKind, trace.Span]:
    """What the Celery instrumentation does around the task: a current `run/...` span."""
    with tracer.start_as_current_span("run/kodo.run_workflow") as task_span:
        kind = fake.engine.execute(wid).kind
    return kind, task_span


def test_a_span_per_operation_under_the_task_span_with_its_ids_in_the_product(
    traced: tuple[Fake, InMemorySpanExporter, trace.Tracer], clk: FakeClock
) -> None:
    fake, exporter, tracer = traced
    fake.client.start(parent, 21, workflow_id="tel-1")
    kind, task = _run_task(tracer, fake, "tel-1")
    assert kind is OutcomeKind.PARKED  # the first attempt of tel.flaky failed: parked for its backoff

    spans = {s.name: s for s in exporter.get_finished_spans()}
    task_ctx = task.get_span_context()
    for name, fid in (("tel.compute", 1), ("tel.record", 2), ("tel.flaky", 3)):
        s = spans[name]
        ctx = s.get_span_context()
        assert s.parent is not None and s.parent.span_id == task_ctx.span_id, name
        assert ctx is not None and ctx.trace_id == task_ctx.trace_id
        assert s.attributes is not None
        assert (s.attributes["workflowID"], s.attributes["step.functionID"], s.attributes["attempt"]) == (
            "tel-1",
            fid,
            1,
        )
    assert spans["tel.compute"].attributes["step.kind"] == "step"  # type: ignore[index]
    assert spans["tel.record"].attributes["step.kind"] == "transaction"  # type: ignore[index]
    assert spans["tel.flaky"].attributes["kodo.outcome"] == "retry"  # type: ignore[index]
    assert spans["tel.flaky"].status.status_code is trace.StatusCode.ERROR
    for name in ("tel.compute", "tel.record"):  # what the product stores: this operation's span ids
        ctx = spans[name].get_span_context()
        assert ctx is not None
        assert SEEN_IDS[name] == (format_trace_id(ctx.trace_id), format_span_id(ctx.span_id))
    assert context.trace_ids() == (None, None)  # unbound once the operation ended

    exporter.clear()
    clk.advance(1500)
    assert fake.reconciler().wake_timers() == 1
    kind, task = _run_task(tracer, fake, "tel-1")
    assert kind is OutcomeKind.SUCCESS
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["tel.compute"].attributes["step.replayed"] is True  # type: ignore[index]
    assert spans["tel.flaky"].attributes["attempt"] == 2  # type: ignore[index]
    assert spans["tel.flaky"].attributes["kodo.outcome"] == "ok"  # type: ignore[index]
    start = spans["kodo.start_child"]
    assert start.attributes["step.kind"] == "start_child"  # type: ignore[index]


def test_doorbells_carry_the_workflow_name_and_partition_to_the_broker(
    traced: tuple[Fake, InMemorySpanExporter, trace.Tracer], clk: FakeClock
) -> None:
    fake, _, _ = traced
    fake.client.start(parent, 1, workflow_id="tel-2")
    assert fake.dispatcher.labels["tel-2"] == ("tel.parent", None)
    fake.engine.execute("tel-2")
    clk.advance(1500)
    fake.reconciler().wake_timers()
    assert fake.dispatcher.labels["tel-2"] == ("tel.parent", None)  # a timer's doorbell too
    fake.engine.execute("tel-2")
    assert fake.dispatcher.labels["tel-2-c"] == ("tel.child", "tenant-t")


def test_step_durations_are_observed_per_run_not_per_replay(
    traced: tuple[Fake, InMemorySpanExporter, trace.Tracer], clk: FakeClock
) -> None:
    fake, _, _ = traced

    def count(name: str, result: str) -> float:
        for metric in telemetry.STEP_SECONDS.collect():
            for sample in metric.samples:
                labels = sample.labels
                if sample.name.endswith("_count") and labels["name"] == name and labels["outcome"] == result:
                    return sample.value
        return 0.0

    before = {k: count(*k) for k in (("tel.compute", "ok"), ("tel.flaky", "retry"), ("tel.flaky", "ok"))}
    fake.client.start(parent, 3, workflow_id="tel-3")
    fake.engine.execute("tel-3")
    clk.advance(1500)
    fake.reconciler().wake_timers()
    fake.engine.execute("tel-3")
    after = {k: count(*k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {
        ("tel.compute", "ok"): 1,  # ran once, replayed once: one observation
        ("tel.flaky", "retry"): 1,
        ("tel.flaky", "ok"): 1,
    }
