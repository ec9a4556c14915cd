"""A local stand-in for the OpenCode server (the original's `scripts/oc-mock-daemon.ts`, §7).

    python -m ops.ocmock [--host 127.0.0.1] [--port 4096]

It speaks the part of the OpenCode HTTP API kodo calls: `GET /global/health`, `GET /doc`,
`GET /global/agents`, `GET /app/agents`, `POST /session` (a new `ses_<hex>` id), `POST
/session/<id>/prompt` (and `/message`), `GET /session/<id>/message`, `POST /session/<id>/revert`,
`POST /app/log`. A prompt is answered from the agent's queue of canned responses, then the global
queue, then the default: plan `{goal:"default goal", design, files, risks, tests:[test0.ts..test4.ts]}`
and build `{patch:[], tests:[test0.ts..test4.ts], test_command:"echo running"}`.

Test controls: `POST /push-agent-response {agent?, response}` queues one response; a response may be
`{"stallSeconds": s, ...}` (silence before answering), `{"status": 500}` (an error status) or
`{"error": {...}}` (an error body, e.g. `name: StructuredOutputError`); anything else is the
structured output. `GET /calls` lists the prompts received; `POST /reset` forgets everything.
`mise run oc:daemon:up` starts this server when no `opencode` binary is installed (and not strict).
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TESTS = [f"test{i}.ts" for i in range(5)]
DEFAULTS: dict[str, dict[str, Any]] = {
    "plan": {"goal": "default goal", "design": ["default design"], "files": [], "risks": [], "tests": TESTS},
    "build": {"patch": [], "tests": TESTS, "test_command": "echo running"},
}


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, deque[dict[str, Any]]] = {}
        self.calls: list[dict[str, Any]] = []
        self.sessions: dict[str, list[dict[str, Any]]] = {}
        self.reverts: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []

    def next_response(self, agent: str) -> dict[str, Any]:
        with self.lock:
            for key in (agent, "*"):
                queue = self.queues.get(key)
                if queue:
                    return queue.popleft()
        return dict(DEFAULTS.get(agent, DEFAULTS["build"]))


class Handler(BaseHTTPRequestHandler):
    server: MockServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a stall test)
            pass

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def do_GET(self) -> None:
        state, path = self.server.state, self.path.split("?")[0]
        if path == "/global/health":
            self._send(200, {"healthy": True, "version": "kodo-ocmock"})
        elif path == "/doc":
            self._send(200, {"openapi": "3.1.0", "info": {"title": "opencode (kodo mock)"}, "paths": {}})
        elif path in ("/global/agents", "/app/agents"):
            self._send(200, [{"id": "plan"}, {"id": "build"}])
        elif path == "/calls":
            with state.lock:
                self._send(200, {"calls": state.calls, "reverts": state.reverts, "logs": state.logs})
        elif path.startswith("/session/") and path.endswith("/message"):
            sid = path.split("/")[2]
            with state.lock:
                self._send(200, state.sessions.get(sid, []))
        else:
            self._send(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        state, path = self.server.state, self.path.split("?")[0]
        body = self._body()
        parts = path.strip("/").split("/")
        if path == "/session":
            sid = "ses_" + secrets.token_hex(6)
            with state.lock:
                state.sessions[sid] = []
            self._send(200, {"id": sid, "title": body.get("title")})
        elif len(parts) == 3 and parts[0] == "session" and parts[2] in ("prompt", "message"):
            self._prompt(parts[1], body)
        elif len(parts) == 3 and parts[0] == "session" and parts[2] == "revert":
            with state.lock:
                state.reverts.append({"session": parts[1], **body})
            self._send(200, {"ok": True})
        elif path == "/app/log":
            with state.lock:
                state.logs.append(body)
            self._send(200, True)
        elif path == "/push-agent-response":
            with state.lock:
                state.queues.setdefault(body.get("agent") or "*", deque()).append(body["response"])
            self._send(200, {"ok": True})
        elif path == "/reset":
            with state.lock:
                state.queues.clear()
                state.calls.clear()
                state.reverts.clear()
                state.logs.clear()
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": f"no route {path}"})

    def _prompt(self, sid: str, body: dict[str, Any]) -> None:
        state = self.server.state
        agent = str(body.get("agent") or "build")
        text = "".join(p.get("text", "") for p in body.get("parts") or [] if isinstance(p, dict))
        response = state.next_response(agent)
        with state.lock:
            state.calls.append({"session": sid, "agent": agent, "text": text, "format": body.get("format")})
        if "stallSeconds" in response:
            time.sleep(float(response["stallSeconds"]))
            response = {k: v for k, v in response.items() if k != "stallSeconds"}
        if "status" in response:
            self._send(int(response["status"]), {"error": "injected"})
            return
        if "error" in response:
            self._send(400, {"error": response["error"]})
            return
        mid = "msg_" + secrets.token_hex(6)
        with state.lock:
            state.sessions.setdefault(sid, []).append({"info": {"id": mid, "role": "assistant"}})
        self._send(
            200,
            {
                "info": {"id": mid, "structured_output": response, "tool_calls": []},
                "messages": [{"role": "assistant", "text": json.dumps(response)}],
                "usage": {"total_tokens": 42},
            },
        )


class MockServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), Handler)
        self.state = State()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start(host: str = "127.0.0.1", port: int = 0) -> MockServer:
    """Serve in a daemon thread (tests); `port=0` takes a free port. Stop with `.shutdown()`."""
    server = MockServer(host, port)
    threading.Thread(target=server.serve_forever, name="ocmock", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="A local stand-in for the OpenCode server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4096)
    args = parser.parse_args()
    server = MockServer(args.host, args.port)
    print(f"ocmock listening on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
