"""`GET /api/runs/:wid/stream`: the run stream as Server-Sent Events (kodo/intent/stream.py).

Events `status`, `step` and `output`, each with its resumable `id`, then `end` when the run is
terminal (the stream closes). A client resumes after a disconnect with the `Last-Event-ID` header
(EventSource sends it by itself) or `?lastEventId=`. A stream lives at most KODO_STREAM_MAX_S
seconds (it holds a server thread): it then closes and the client reconnects from its last id, which
the `retry:` line tells EventSource to do after one second. Comments keep an idle stream open
through proxies. The run is looked up, and the id checked, before the stream starts: a 404 or 400
is a JSON error like any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, request, stream_with_context

from kodo.api.intents import service
from kodo.api.openapi import NOT_FOUND, operation
from kodo.api.schemas import validate
from kodo.intent.stream import Cursor, RunStream, StreamQuery

bp = Blueprint("stream", __name__)

POLL_S = 0.25
KEEPALIVE_S = 10.0
RETRY_MS = 1000
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "`id: <tx>-<seq>` / `event: status|step|output|end` / `data: <JSON>` blocks; "
            "`end` (data `{status}`) closes the stream once the run is terminal",
        }
    }
}


@bp.get("/api/runs/<workflow_id>/stream")
@operation(
    "The run's status changes, step completions and sandbox output as Server-Sent Events, resumable "
    "with Last-Event-ID (or lastEventId), closed when the run is terminal",
    {200: EVENT_STREAM},
    errors=(NOT_FOUND,),
    query=StreamQuery,
)
def run_stream(workflow_id: str) -> Response:
    args = {key: request.args.get(key) for key in request.args}
    header = request.headers.get("Last-Event-ID")
    query = validate(StreamQuery, {**args, **({"lastEventId": header} if header else {})}, "StreamQuery")
    svc = service()
    stream = RunStream(svc.get_run(workflow_id), Cursor.parse(query.lastEventId))
    max_s = float(svc.settings.stream_max_s)

    def events() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        started = last_sent = time.monotonic()
        while True:
            with svc.db.conn() as c:
                batch = stream.poll(c)
            for event in batch:
                yield event.sse()
            now = time.monotonic()
            if batch:
                last_sent = now
            if stream.ended or now - started >= max_s:
                return
            if now - last_sent >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = now
            time.sleep(POLL_S)

    return Response(
        stream_with_context(events()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
