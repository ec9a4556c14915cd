"""Tracing and metrics: OpenTelemetry and Prometheus, plugged into the engine's operation hooks.

Wiring, like `kodo.runtime`: the entrypoints import it, the layers never do (`kodo.workflow`,
`kodo.intent` and `kodo.demo` import no opentelemetry and no prometheus_client). The workflow layer
only offers `context.trace_ids()`, which `SpanHook` fills, so the product stores a step's trace and
span ids (`app.run_steps`) without a tracer.

* **Tracing** is off unless an OTLP endpoint is configured (`Settings.observability`). Then every
  process that builds a Runtime exports spans over OTLP/HTTP: Flask's (the API, `instrument_flask`),
  Celery's (publish and run, with the trace context carried in the message headers) and one span per
  workflow operation (`SpanHook`), a child of the Celery task span that runs it. With OTLP_REQUIRED=1
  (or DBOS_ENABLE_OTLP=true) start-up probes every endpoint and stops on one that does not answer.
* **Metrics**: `StepMetricsHook` feeds the step-duration histogram in the process that runs the step.
  A prefork worker has many processes, so with PROMETHEUS_MULTIPROC_DIR set each writes its samples
  there (prometheus_client's multiprocess mode) and the admin server's `/metrics` adds them up; the
  counts (workflows by status, queue depths, recoveries, absorbed duplicates, republishes) are read
  from Postgres at scrape time (`PgCollector`), so they hold for every process and host.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import Span, Status, StatusCode, format_span_id, format_trace_id
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from kodo import clock
from kodo.config import Observability, Settings
from kodo.db.pool import Database
from kodo.db.queries import Q
from kodo.errors import Cancelled, ConfigError, Parked, Preempted, UnavailableError
from kodo.queues import WORKER_QUEUES
from kodo.states import OpKind
from kodo.workflow import context
from kodo.workflow.context import TraceIds
from kodo.workflow.operations import Op

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry._logs import Logger
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.trace import TracerProvider

    from kodo.workflow.engine import Engine

log = logging.getLogger("kodo.telemetry")

PROBE_TIMEOUT_S = 1.0
TRACER_NAME = "kodo.workflow"


# ---- outcome of an operation, as spans and metrics label it ------------------------------------------


def outcome(error: BaseException | None) -> str:
    """ok | error | retry (a failed attempt parked for its backoff) | parked | cancelled | preempted."""
    if error is None:
        return "ok"
    if isinstance(error, Parked):
        cause = error.__cause__
        return "retry" if isinstance(cause, Exception) else "parked"
    if isinstance(error, Cancelled):
        return "cancelled"
    if isinstance(error, Preempted):
        return "preempted"
    return "error"


# ---- tracing -----------------------------------------------------------------------------------------


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """POST an empty body to an OTLP endpoint: any HTTP answer means a receiver listens there."""
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered (an empty export may well be refused): a receiver is there
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"OTLP receiver unreachable at {url} ({reason})") from exc


def check_endpoints(obs: Observability) -> None:
    """With OTLP required, every endpoint must answer now; else ConfigError (start-up stops)."""
    if obs.otlp_required:
        for url in (*obs.traces_endpoints, *obs.logs_endpoints):
            probe(url)


_setup_lock = threading.Lock()
_provider: TracerProvider | None = None
_log_provider: LoggerProvider | None = None
# The structured step records (`event=step`), sent as OTLP log records when a logs endpoint is set.
_step_records: Logger | None = None


def setup(settings: Settings) -> TracerProvider | None:
    """This process's tracing, once (a forked child keeps its parent's: the SDK restarts its export
    threads after a fork). None when tracing is off. Raises ConfigError when OTLP is required and an
    endpoint does not answer."""
    global _provider
    obs = settings.observability
    if not obs.tracing:
        return None
    with _setup_lock:
        if _provider is not None:
            return _provider
        check_endpoints(obs)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({**dict(obs.resource_attributes), "service.name": obs.service_name})
        provider = TracerProvider(resource=resource)
        for url in obs.traces_endpoints:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        trace.set_tracer_provider(provider)
        if obs.logs_endpoints:
            _export_step_records(obs, resource)
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
        _provider = provider
        log.info("tracing on: spans to %s", ", ".join(obs.traces_endpoints))
        return provider


def _export_step_records(obs: Observability, resource: Any) -> None:
    global _log_provider, _step_records
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    _log_provider = LoggerProvider(resource=resource)
    for url in obs.logs_endpoints:
        _log_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=url)))
    _step_records = _log_provider.get_logger(TRACER_NAME)


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (a prefork child exits without running atexit)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)
    if _log_provider is not None:
        _log_provider.force_flush(timeout_ms)


def instrument_flask(app: Flask, settings: Settings) -> None:
    """Server spans for the API's requests (health checks aside), when tracing is on."""
    provider = setup(settings)
    if provider is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz")  # type: ignore[no-untyped-call]


def label_task_span(workflow_id: str, workflow_name: str | None) -> None:
    """Name the workflow on the current (Celery task) span; nothing when tracing is off."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("workflowID", workflow_id)
        if workflow_name:
            span.set_attribute("workflowName", workflow_name)


class SpanHook:
    """One span per workflow operation, named after it (`CompileST`, `kodo.sleep`, ...), a child of the
    current span (the Celery task span `run/kodo.run_workflow` in a worker) and current itself while
    the operation runs, so what it publishes is its child. Attributes: `workflowID`, `step.functionID`
    (the operation's function id), `step.name`, `step.kind`, `step.replayed`, `attempt` and
    `kodo.outcome`. While the operation runs, `context.trace_ids()` returns the span's ids.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._open: dict[int, tuple[Span, Token[Any], Token[TraceIds]]] = {}

    def before(self, op: Op) -> None:
        span = self.tracer.start_span(
            op.name,
            attributes={
                "workflowID": op.workflow_id,
                "step.functionID": op.function_id,
                "step.name": op.name,
                "step.kind": op.kind.value,
                "step.replayed": op.replayed,
                "attempt": op.attempt,
            },
        )
        current = otel_context.attach(trace.set_span_in_context(span))
        ids = span.get_span_context()
        bound = context.bind_trace_ids(format_trace_id(ids.trace_id), format_span_id(ids.span_id))
        self._open[id(op)] = (span, current, bound)

    def after(self, op: Op, error: BaseException | None) -> None:
        frame = self._open.pop(id(op), None)
        if frame is None:
            return
        span, current, bound = frame
        result = outcome(error)
        span.set_attribute("attempt", op.attempt)  # known once the step ran (retries count up)
        span.set_attribute("kodo.outcome", result)
        failure = _failure(error, result)
        if failure is not None:
            span.record_exception(failure)
            span.set_status(Status(StatusCode.ERROR, str(failure)))
        if _step_records is not None and op.kind in MEASURED and not op.replayed:
            _step_records.emit(  # while the span is current: the record carries its ids
                timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=f"step {op.name}",
                event_name="step",
                attributes={
                    "event": "step",
                    "step_name": op.name,
                    "step_function_id": op.function_id,
                    "attempt": op.attempt,
                    "workflowID": op.workflow_id,
                    "outcome": result,
                },
            )
        context.unbind_trace_ids(bound)
        otel_context.detach(current)
        span.end()


def _failure(error: BaseException | None, result: str) -> BaseException | None:
    """What failed: the error, or for a retry the attempt's error the backoff was parked for."""
    if error is None:
        return None
    return error.__cause__ if result == "retry" else error if result == "error" else None


# ---- metrics -----------------------------------------------------------------------------------------

MEASURED = frozenset({OpKind.STEP, OpKind.TRANSACTION})
RECORDED_OUTCOMES = frozenset({"ok", "error", "retry"})
STEP_SECONDS = Histogram(
    "kodo_step_duration_seconds",
    "Duration of each run of a workflow step or transaction (replays excluded), by outcome",
    ["kind", "name", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=None,  # the admin server collects it (this process's, or every process's files)
)


class StepMetricsHook:
    """Times each step and transaction that runs here (not replays) into `kodo_step_duration_seconds`."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}

    def before(self, op: Op) -> None:
        if op.kind in MEASURED and not op.replayed:
            self._started[id(op)] = time.perf_counter()

    def after(self, op: Op, error: BaseException | None) -> None:
        started = self._started.pop(id(op), None)
        result = outcome(error)
        if started is not None and result in RECORDED_OUTCOMES:  # a parked or cancelled step did not run
            STEP_SECONDS.labels(op.kind.value, op.name, result).observe(time.perf_counter() - started)


def install(engine: Engine, settings: Settings) -> None:
    """The engine's observability hooks: step metrics always, spans when tracing is on."""
    engine.hooks.add(StepMetricsHook())
    provider = setup(settings)
    if provider is not None:
        engine.hooks.add(SpanHook(provider.get_tracer(TRACER_NAME)))


class PgCollector:
    """The counts `/metrics` reads from Postgres at scrape time (every process's and host's work)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> list[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        try:
            with self.db.conn() as c:
                by_status = c.execute(Q["metrics_workflows"]).fetchall()
                runs = c.execute(Q["metrics_runs"]).fetchall()
                depth = c.execute(Q["metrics_queue_depth"], {"now": clock.now_ms()}).fetchall()
        except Exception as exc:
            raise UnavailableError("database unavailable") from exc
        yield from _workflow_metrics(by_status)
        runs_by_status = GaugeMetricFamily("kodo_runs", "Intent runs (app.runs) by status", labels=["status"])
        for r in runs:
            runs_by_status.add_metric([r["status"]], r["n"])
        yield runs_by_status
        queue_depth = GaugeMetricFamily(
            "kodo_queue_depth",
            "Workflows waiting for a worker (ENQUEUED, or runnable and unclaimed) by queue and partition",
            labels=["queue", "partition"],
        )
        seen = set()
        for r in depth:
            seen.add((r["queue_name"], r["partition_key"]))
            queue_depth.add_metric([r["queue_name"], r["partition_key"]], r["n"])
        for q in WORKER_QUEUES:  # every worker queue has its keyless series, 0 when nothing waits there
            if (q, "") not in seen:
                queue_depth.add_metric([q, ""], 0)
        yield queue_depth


def _workflow_metrics(rows: Iterable[dict[str, Any]]) -> Iterator[Metric]:
    workflows = GaugeMetricFamily(
        "kodo_workflows",
        "Workflows by queue, status and application version",
        labels=["queue", "status", "version"],
    )
    recoveries = GaugeMetricFamily(
        "kodo_recovery_attempts",
        "Recovery attempts recorded on the workflows (a takeover of a dead runner's lease counts one; "
        "resume resets a workflow's count)",
        labels=["queue"],
    )
    absorbed = CounterMetricFamily(
        "kodo_duplicate_deliveries_absorbed",
        "Deliveries that could not claim their workflow and ran nothing (noop_deliveries)",
        labels=["queue"],
    )
    republishes = GaugeMetricFamily(
        "kodo_republishes",
        "Republishes of workflows not claimed since (publish_count; a claim resets a workflow's count)",
        labels=["queue"],
    )
    per_queue: dict[str, list[int]] = {q: [0, 0, 0] for q in WORKER_QUEUES}
    for r in rows:
        workflows.add_metric([r["queue_name"], r["status"], r["application_version"]], r["n"])
        sums = per_queue.setdefault(r["queue_name"], [0, 0, 0])
        sums[0] += int(r["recovery_attempts"])
        sums[1] += int(r["noop_deliveries"])
        sums[2] += int(r["publish_count"])
    for queue, (recovered, noops, published) in sorted(per_queue.items()):
        recoveries.add_metric([queue], recovered)
        absorbed.add_metric([queue], noops)
        republishes.add_metric([queue], published)
    yield from (workflows, recoveries, absorbed, republishes)


def metrics_registry(db: Database, settings: Settings) -> CollectorRegistry:
    """What the admin server's `/metrics` serves: the Postgres counts, and the step histogram of every
    process writing to PROMETHEUS_MULTIPROC_DIR (without it: of this process only)."""
    registry = CollectorRegistry()
    registry.register(PgCollector(db))
    metrics_dir = settings.observability.metrics_dir
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    else:
        registry.register(STEP_SECONDS)
    return registry
