"""Helpers for the HTTP API tests: requests, run rows written directly, and database fingerprints.

No worker runs in these tests, so a started run stays ENQUEUED; tests that need a run in another
status write it with SQL, as the original's integration tests did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

Sql = Callable[..., list[dict[str, Any]]]
KEY = {"queuePartitionKey": "tenant-a"}
INTENT = {"goal": "build it", "inputs": {}, "constraints": {}}


def body(response: Any) -> Any:
    """A response's JSON body, typed for indexing (`TestResponse.json` may be None)."""
    return response.get_json()


def post(http: FlaskClient, url: str, body: Any = None, raw: str | None = None) -> Any:
    """POST a JSON body (or raw text); no content-type, as the runbooks' curl calls send."""
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return http.post(url, data=data)


def create_intent(http: FlaskClient, **overrides: Any) -> str:
    r = post(http, "/intents", {**INTENT, **overrides})
    assert r.status_code == 201, r.json
    intent_id: str = r.json["intentId"]
    return intent_id


def start_run(http: FlaskClient, intent_id: str, **body: Any) -> dict[str, Any]:
    r = post(http, f"/intents/{intent_id}/run", {**KEY, **body})
    assert r.status_code == 202, r.json
    started: dict[str, Any] = r.json
    return started


def set_run(sql: Sql, run_id: str, **columns: Any) -> None:
    """Write run columns directly (the workflow's job, which no worker does here)."""
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    sql(f"UPDATE app.runs SET {assignments} WHERE id = %(run_id)s", {**columns, "run_id": run_id})


def fingerprint(sql: Sql) -> dict[str, tuple[int, str | None]]:
    """Row count and content hash of every table in schemas app and dbos (two round trips)."""
    tables = [
        r["t"]
        for r in sql(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
            "WHERE table_schema IN ('app', 'dbos') AND table_type = 'BASE TABLE' ORDER BY 1"
        )
    ]
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*) AS n, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM {t} x"
        for t in tables
    )
    return {r["t"]: (int(r["n"]), r["h"]) for r in sql(union)}
