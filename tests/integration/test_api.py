"""The proof routes over HTTP (Flask test client, real Postgres, a real worker for the run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo.api import create_app
from kodo.runtime import Runtime


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


def _count(sql: Callable[..., list[dict[str, Any]]]) -> tuple[int, int]:
    wf = sql("SELECT count(*) AS n FROM dbos.workflow_status")[0]["n"]
    marks = sql("SELECT count(*) AS n FROM app.marks")[0]["n"]
    return int(wf), int(marks)


def test_healthz(http: FlaskClient) -> None:
    r = http.get("/healthz")
    assert (r.status_code, r.json, r.headers["Content-Type"]) == (200, {"ok": True}, "application/json")


@pytest.mark.parametrize(
    ("method", "url", "status", "body"),
    [
        ("POST", "/crashdemo", 400, {"error": "wf query param required"}),
        ("POST", "/crashdemo?wf=", 400, {"error": "wf query param required"}),
        ("POST", "/crashdemo?wf=%20%20", 400, {"error": "wf query param required"}),
        ("GET", "/marks", 400, {"error": "wf query param required"}),
        ("GET", "/crashdemo?wf=x", 404, {"error": "not found"}),
        ("DELETE", "/healthz", 404, {"error": "not found"}),
        ("GET", "/no/such/route", 404, {"error": "not found"}),
    ],
)
def test_rejections_are_deterministic_json_and_write_nothing(
    http: FlaskClient,
    sql: Callable[..., list[dict[str, Any]]],
    method: str,
    url: str,
    status: int,
    body: dict[str, str],
) -> None:
    before = _count(sql)
    r = http.open(url, method=method, data="{bad json")
    assert (r.status_code, r.json) == (status, body)
    assert r.headers["Content-Type"] == "application/json"
    assert _count(sql) == before


def test_crashdemo_runs_to_both_marks_and_is_idempotent(
    http: FlaskClient,
    rt: Runtime,
    version: str,
    start_worker: Callable[..., Any],
    sql: Callable[..., list[dict[str, Any]]],
) -> None:
    wf = f"api-crash-{version}"
    assert http.get(f"/marks?wf={wf}").json == {"s1": 0, "s2": 0}
    start_worker()
    for _ in range(3):
        r = http.post(f"/crashdemo?wf={wf}")
        assert (r.status_code, r.json) == (202, {"accepted": True, "workflowId": wf})
    deadline = time.monotonic() + 20
    while http.get(f"/marks?wf={wf}").json != {"s1": 1, "s2": 1}:
        assert time.monotonic() < deadline, http.get(f"/marks?wf={wf}").json
        time.sleep(0.05)
    assert rt.client.wait(wf, 10)["status"] == "SUCCESS"
    assert sql("SELECT count(*) AS n FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,))[0]["n"] == 1
    assert (
        sql("SELECT queue_name FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,))[0]["queue_name"]
        == "controlQ"
    )
