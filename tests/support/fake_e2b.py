"""A local stand-in for the E2B cloud, spoken to by the real `e2b` SDK (tests only).

One HTTP/1.1 server plays both parts the SDK talks to (pass its URL as `E2B_API_URL` and
`E2B_SANDBOX_URL`):

* the E2B API: `POST /v2/sandboxes` (a new sandbox: `sandboxID`, `envdVersion` 0.5.0, an access
  token) and `DELETE /sandboxes/<id>` (kills what runs in it);
* envd, the agent inside a sandbox: the Connect RPC `POST /process.Process/Start` (server stream, JSON
  codec: a start event, data events as output arrives, an end event with the exit code), and
  `POST /files` (multipart upload) / `GET /files?path=` (download).

A sandbox is a temporary directory: sandbox paths map into it, and commands really run there
(`bash -c`). `fail_create` makes the next creations fail with a status (e.g. 401 or 500).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ENVD_VERSION = "0.5.0"


class Sandbox:
    def __init__(self, sid: str, template: str, body: dict[str, Any]) -> None:
        self.id, self.template, self.body = sid, template, body
        self.root = Path(tempfile.mkdtemp(prefix=f"fake-e2b-{sid}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed = False
        self.commands: list[dict[str, Any]] = []

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sandboxes: dict[str, Sandbox] = {}
        self.fail_create: list[int] = []
        self.auth: list[str] = []

    def find(self, sid: str | None) -> Sandbox | None:
        with self.lock:
            return self.sandboxes.get(sid or "")


def _envelope(payload: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(payload).encode()
    return struct.pack(">BI", flags, len(data)) + data


class Handler(BaseHTTPRequestHandler):
    server: FakeE2B
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sandbox(self) -> Sandbox | None:
        return self.server.state.find(self.headers.get("E2b-Sandbox-Id"))

    # ---- the E2B API -------------------------------------------------------------------------------

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        state = self.server.state
        if url.path == "/v2/sandboxes":
            with state.lock:
                state.auth.append(self.headers.get("X-API-Key", ""))
                status = state.fail_create.pop(0) if state.fail_create else 0
            if status:
                self._send(status, {"code": status, "message": "injected create failure"})
                return
            req = json.loads(body or b"{}")
            sid = "sbx" + secrets.token_hex(6)
            sbx = Sandbox(sid, str(req.get("templateID")), req)
            with state.lock:
                state.sandboxes[sid] = sbx
            self._send(
                201,
                {
                    "templateID": sbx.template,
                    "sandboxID": sid,
                    "clientID": "fake",
                    "envdVersion": ENVD_VERSION,
                    "envdAccessToken": "tok-" + sid,
                },
            )
        elif url.path == "/process.Process/Start":
            self._start(body)
        elif url.path == "/files":
            self._upload(url.query, body)
        else:
            self._send(404, {"code": 404, "message": f"no route {url.path}"})

    def do_DELETE(self) -> None:
        url = urlsplit(self.path)
        sbx = (
            self.server.state.find(url.path.rsplit("/", 1)[-1])
            if url.path.startswith("/sandboxes/")
            else None
        )
        if sbx is None:
            self._send(404, {"code": 404, "message": "sandbox not found"})
            return
        sbx.killed = True
        for proc in sbx.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)  # like the real API: the kill answers once the sandbox is gone
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    # ---- envd --------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        sbx = self._sandbox()
        if url.path == "/health":
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
        elif url.path == "/files" and sbx is not None:
            path = sbx.path(parse_qs(url.query).get("path", [""])[0])
            if not path.is_file():
                self._send(404, {"code": 404, "message": f"path not found: {path}"})
                return
            self._send(200, path.read_bytes(), "application/octet-stream")
        else:
            self._send(404, {"code": 404, "message": f"no route {url.path}"})

    def _upload(self, query: str, body: bytes) -> None:
        sbx = self._sandbox()
        if sbx is None:
            self._send(404, {"code": 404, "message": "sandbox not found"})
            return
        head = f"content-type: {self.headers.get('content-type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
        written = []
        for part in message.iter_parts():
            target = parse_qs(query).get("path", [part.get_filename() or ""])[0]
            path = sbx.path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = part.get_payload(decode=True)
            path.write_bytes(payload if isinstance(payload, bytes) else b"")
            written.append({"name": path.name, "type": "file", "path": target})
        self._send(200, written)

    def _start(self, body: bytes) -> None:
        sbx = self._sandbox()
        if sbx is None or sbx.killed:
            self._send(404, {"code": "not_found", "message": "sandbox not found"})
            return
        request = json.loads(body[5:])
        process = request.get("process", {})
        args = process.get("args") or []
        cmd = args[-1] if args else ""
        cwd = sbx.path(process.get("cwd") or "/home/user")
        cwd.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(sbx.root), **(process.get("envs") or {})}
        sbx.commands.append({"cmd": cmd, "cwd": process.get("cwd"), "envs": process.get("envs") or {}})
        proc = subprocess.Popen(
            ["/bin/bash", "-c", cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        sbx.procs.append(proc)
        self.send_response(200)
        self.send_header("content-type", "application/connect+json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        lock = threading.Lock()

        def chunk(data: bytes) -> None:
            with lock:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        def pump(stream: Any, name: str) -> None:
            for line in iter(lambda: stream.read1(65536), b""):
                chunk(_envelope({"event": {"data": {name: base64.b64encode(line).decode()}}}))

        try:
            chunk(_envelope({"event": {"start": {"pid": proc.pid}}}))
            pumps = [
                threading.Thread(target=pump, args=(proc.stdout, "stdout")),
                threading.Thread(target=pump, args=(proc.stderr, "stderr")),
            ]
            for t in pumps:
                t.start()
            code = proc.wait()
            for t in pumps:
                t.join()
            end = {"exitCode": code, "exited": True, "status": f"exit status {code}"}
            chunk(_envelope({"event": {"end": end}}))
            chunk(_envelope({}, flags=0x02))
            chunk(b"")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline)
            pass


class FakeE2B(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = State()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        for sbx in self.state.sandboxes.values():
            for proc in sbx.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            shutil.rmtree(sbx.root, ignore_errors=True)


def start() -> FakeE2B:
    server = FakeE2B()
    threading.Thread(target=server.serve_forever, name="fake-e2b", daemon=True).start()
    return server
