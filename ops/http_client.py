"""HTTP calls to kodo's servers (the API, the admin server): one JSON request, polling, health checks."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ops.processes import Proc, wait_until

Answer = tuple[int, Any]  # (status, decoded JSON body or None)


def http_json(method: str, url: str, timeout: float = 5.0, json_body: Any = None) -> Answer:
    """One HTTP request; returns (status, decoded JSON body or None).

    `json_body`, when given, is sent as JSON (`content-type: application/json`, as the runbooks' curl
    calls send it); a POST without one sends an empty body.
    """
    if json_body is not None:
        req = urllib.request.Request(
            url,
            method=method,
            data=json.dumps(json_body).encode(),
            headers={"content-type": "application/json"},
        )
    else:
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def try_get(url: str, timeout: float = 2.0) -> Answer | str:
    """GET `url`; a connection error comes back as its repr instead of being raised."""
    try:
        return http_json("GET", url, timeout)
    except (OSError, urllib.error.URLError) as exc:
        return repr(exc)


def poll_json(
    url: str, done: Callable[[int, Any], bool], timeout: float, interval: float = 0.1
) -> Answer | None:
    """GET `url` every `interval` s until `done(status, body)` or `timeout` s; returns the last answer
    (None if none came: connection errors are retried)."""
    last: Answer | None = None

    def answered() -> bool:
        nonlocal last
        got = try_get(url)
        if isinstance(got, str):
            return False
        last = got
        return done(*got)

    with contextlib.suppress(TimeoutError):
        wait_until(url, answered, timeout, interval)
    return last


def wait_healthy(url: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    """Poll `url` (a /healthz) until it answers 200 {"ok": true}. Fails fast if `proc` exits."""
    last = ""

    def healthy() -> bool:
        nonlocal last
        if proc is not None:
            proc.ensure_running()
        got = try_get(url)
        last = got if isinstance(got, str) else f"{got[0]} {got[1]}"
        return (
            not isinstance(got, str)
            and got[0] == 200
            and isinstance(got[1], dict)
            and got[1].get("ok") is True
        )

    def detail() -> str:
        return f"last: {last}" + (f"\n{proc.tail()}" if proc is not None else "")

    wait_until(f"{url} healthy", healthy, timeout, 0.1, detail)
