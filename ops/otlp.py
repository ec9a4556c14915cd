"""A local OTLP/HTTP receiver: what `otlp:smoke` and the tracing tests export to.

It answers 200 to every POST (as the original's mock receiver did) and decodes what it can: trace
exports (`ExportTraceServiceRequest`, protobuf) into `SpanRecord`s and log exports into
`LogRecord`s, so a test can check the spans a real exporter sent, their attributes and parentage.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


@dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    kind: int  # opentelemetry.proto Span.SpanKind: 2 server, 4 producer, 5 consumer
    service: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRecord:
    body: Any
    trace_id: str | None
    span_id: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


class Receiver:
    """`with Receiver() as r:` serves on `r.base_url` (`/v1/traces`, `/v1/logs`, any other path)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[SpanRecord] = []
        self.logs: list[LogRecord] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                answer = receiver._take(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, path: str, body: bytes) -> bytes:
        with self._lock:
            self.requests += 1
        if path.endswith("/v1/logs"):
            logs = ExportLogsServiceRequest.FromString(body) if body else ExportLogsServiceRequest()
            self._take_logs(logs)
            return bytes(ExportLogsServiceResponse().SerializeToString())
        try:
            traces = ExportTraceServiceRequest.FromString(body) if body else ExportTraceServiceRequest()
        except Exception:  # not a trace export (a probe, a smoke's odd path): still a 200
            traces = ExportTraceServiceRequest()
        self._take_spans(traces)
        return bytes(ExportTraceServiceResponse().SerializeToString())

    def _take_spans(self, request: ExportTraceServiceRequest) -> None:
        got = []
        for rs in request.resource_spans:
            service = _attributes(rs.resource.attributes).get("service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        SpanRecord(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex() or None,
                            kind=int(s.kind),
                            service=service,
                            attributes=_attributes(s.attributes),
                        )
                    )
        with self._lock:
            self.spans.extend(got)

    def _take_logs(self, request: ExportLogsServiceRequest) -> None:
        got = []
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    got.append(
                        LogRecord(
                            body=_value(r.body),
                            trace_id=r.trace_id.hex() or None,
                            span_id=r.span_id.hex() or None,
                            attributes=_attributes(r.attributes),
                        )
                    )
        with self._lock:
            self.logs.extend(got)

    def spans_now(self) -> list[SpanRecord]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, what: str, check: Callable[[list[SpanRecord]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.spans_now()):
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans_now()})
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; spans seen: {names}")
            time.sleep(0.1)
