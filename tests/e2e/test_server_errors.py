"""The API's own server (gunicorn) refuses some requests before Flask sees them; each refusal is a
JSON error like every other (kodo/api/gunicorn_conf.py), with gunicorn's status codes and limits."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from tests.e2e.live import LiveSystem


def _raw(system: LiveSystem, request: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """Send `request` as is; returns (status, content type, headers, body)."""
    url = urlsplit(system.base)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers.get("content-type", ""), headers, body


def test_a_request_line_over_the_limit_is_a_json_414(live_system: LiveSystem) -> None:
    status, ctype, _, body = _raw(live_system, b"GET /runs/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, ctype, json.loads(body)) == (414, "application/json", {"error": "request uri too long"})


def test_too_many_or_too_large_headers_are_a_json_431(live_system: LiveSystem) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    status, ctype, _, body = _raw(live_system, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert (status, ctype, json.loads(body)) == (
        431,
        "application/json",
        {"error": "request header fields too large"},
    )
    big = b"X-Big: " + b"v" * 9000 + b"\r\n"
    status, ctype, _, body = _raw(live_system, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert (status, json.loads(body)) == (431, {"error": "request header fields too large"})


def test_a_malformed_request_is_a_json_400(live_system: LiveSystem) -> None:
    status, ctype, headers, body = _raw(live_system, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
    assert (status, ctype, json.loads(body)) == (400, "application/json", {"error": "bad request"})
    assert int(headers["content-length"]) == len(body)
