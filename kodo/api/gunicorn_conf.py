"""gunicorn's configuration for the API (`gunicorn --config python:kodo.api.gunicorn_conf ...`).

gunicorn answers some requests before the Flask app sees them: a request line over
`limit_request_line` (414), headers over `limit_request_field_size` or `limit_request_fields` (431),
a malformed request line, method, header or chunk (400). Its own answer is an HTML page; the API's
contract is a JSON error for every refusal. Loading this module makes gunicorn write those answers as
JSON (`{"error": <stable message>}`, the same messages as `kodo.api.errors.HTTP_ERRORS`), with
gunicorn's own status codes and limits kept.

The access log (a line per request) is off unless KODO_ACCESS_LOG is true (then to stdout): under
load, writing it was about a tenth of the API's CPU, and supervisord relays each line (CPU of its
own). gunicorn's own lines (start-up: "Listening at", "Booting worker"; warnings, errors) stay.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]

from kodo.api.errors import HTTP_ERRORS
from kodo.config import log_settings

# gunicorn's defaults, stated: a request line of at most 4094 bytes, 100 header fields of at most
# 8190 bytes each.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# `--access-logfile` on the command line wins over this (GUNICORN_CMD_ARGS too).
accesslog = "-" if log_settings().access_log else None


def json_error_response(status: int, reason: str) -> bytes:
    """The raw HTTP answer gunicorn sends for a request it refused itself."""
    body = json.dumps({"error": HTTP_ERRORS.get(status, reason.lower())}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: Any) -> None:
    """`gunicorn.util.write_error`, answering JSON instead of HTML (the message stays in gunicorn's log)."""
    util.write_nonblock(sock, json_error_response(int(status_int), str(reason)))


util.write_error = write_json_error
