"""Limits at run time (issue 9 item 2): `kodo queue show|set|reset` and the admin port's
`/queues/<q>/limits` read and change `dbos.queue_limits` / `dbos.queue_partition_limits`; a bad
change is a 400 (CLI: exit 1) that writes nothing; a reset goes back to the environment's defaults.
"""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from kodo.api.admin import create_admin_app
from kodo.runtime import Runtime
from tests.integration.test_cli import ops
from tests.support.helpers import Sql


def admin(rt: Runtime) -> FlaskClient:
    return create_admin_app(rt).test_client()


def rows(sql: Sql) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    queues = sql(
        "SELECT queue_name, concurrency, worker_concurrency, rate_limit, rate_period_ms, partition_concurrency,"
        " partition_worker_concurrency, partition_rate_limit, partition_rate_period_ms, priority_enabled, source"
        " FROM dbos.queue_limits ORDER BY queue_name"
    )
    parts = sql(
        "SELECT queue_name, partition_key, concurrency, worker_concurrency, rate_limit, rate_period_ms, weight"
        " FROM dbos.queue_partition_limits ORDER BY 1, 2"
    )
    return queues, parts


def test_admin_port_sets_shows_and_resets_limits(rt: Runtime, sql: Sql) -> None:
    http = admin(rt)
    sql("DELETE FROM dbos.queue_partition_limits")
    sql("DELETE FROM dbos.queue_limits")
    rt.reconciler().write_env_limits()  # what a reconciler writes at start-up
    shown = http.get("/queues/limits").get_json()
    assert [(q["queue"], q["source"], q["partitionConcurrency"], q["partitionRate"]) for q in shown] == [
        ("sbxQ", "env", 50, "10000/60s")  # the suite's SBX_QUEUE_RATE_LIMIT_PER_PERIOD
    ]

    r = http.put("/queues/sbxQ/limits", json={"concurrency": 7, "rate": "20/10", "workerConcurrency": 2})
    assert r.status_code == 200, r.get_json()
    [sbx] = [q for q in r.get_json() if q["queue"] == "sbxQ"]
    assert (sbx["source"], sbx["concurrency"], sbx["rate"], sbx["workerConcurrency"]) == (
        "operator",
        7,
        "20/10s",
        2,
    )
    assert sbx["partitionConcurrency"] == 50  # fields not given keep their values

    r = http.put("/queues/sbxQ/partitions/tenant-big/limits", json={"concurrency": 9, "weight": 3})
    assert r.status_code == 200
    [sbx] = [q for q in r.get_json() if q["queue"] == "sbxQ"]
    big = [p for p in sbx["partitions"] if p["partition"] == "tenant-big"]
    assert [(p["concurrency"], p["weight"]) for p in big] == [(9, 3)]

    # A limit on intentQ, which the environment leaves unlimited.
    assert http.put("/queues/intentQ/limits", json={"partitionConcurrency": 4}).status_code == 200
    assert {q["queue"] for q in http.get("/queues/limits").get_json()} == {"intentQ", "sbxQ"}

    # An environment write never replaces an operator's limits.
    rt.reconciler().write_env_limits()
    queues, _ = rows(sql)
    assert [(q["queue_name"], q["source"], q["concurrency"]) for q in queues] == [
        ("intentQ", "operator", None),
        ("sbxQ", "operator", 7),
    ]

    # Resets: one partition's own limits, then the queue's (back to the environment's).
    assert http.delete("/queues/sbxQ/partitions/tenant-big/limits").status_code == 200
    assert rows(sql)[1] == []
    assert http.delete("/queues/sbxQ/limits").status_code == 200
    assert http.delete("/queues/intentQ/limits").status_code == 200
    queues, parts = rows(sql)
    assert [(q["queue_name"], q["source"], q["concurrency"], q["partition_concurrency"]) for q in queues] == [
        ("sbxQ", "env", None, 50)
    ]
    assert parts == []


def test_a_bad_change_is_a_400_that_writes_nothing(rt: Runtime, sql: Sql) -> None:
    http = admin(rt)
    rt.reconciler().write_env_limits()
    before = rows(sql)
    cases = [
        ("/queues/sbxQ/limits", {"concurrency": -1}, "invalid concurrency: -1 (a whole number >= 0 or none)"),
        ("/queues/sbxQ/limits", {"concurrency": "many"}, "invalid concurrency: 'many' (a whole number >= 0 or none)"),
        ("/queues/sbxQ/limits", {"rate": "10"}, "invalid rate: '10' (N/SECONDS, e.g. 100/60, N and SECONDS >= 1, or none)"),
        ("/queues/sbxQ/limits", {"rate": "0/5"}, "invalid rate: '0/5' (N/SECONDS, e.g. 100/60, N and SECONDS >= 1, or none)"),
        ("/queues/sbxQ/limits", {"workerConcurrency": 0}, "invalid worker_concurrency: 0 (a whole number >= 1 or none)"),
        ("/queues/sbxQ/limits", {"weight": 2}, "unknown limit 'weight' (allowed: concurrency, worker_concurrency, rate, "
         "partition_concurrency, partition_worker_concurrency, partition_rate, priority)"),
        ("/queues/sbxQ/limits", {}, "nothing to set (give one of: concurrency, worker_concurrency, rate, "
         "partition_concurrency, partition_worker_concurrency, partition_rate, priority)"),
        ("/queues/sbxQ/limits", {"priority": "maybe"}, "invalid priority: 'maybe' (true/false, on/off)"),
        ("/queues/nopeQ/limits", {"concurrency": 1}, "unknown queue 'nopeQ' (one of: intentQ, sbxQ, controlQ)"),
        ("/queues/sbxQ/partitions/t/limits", {"weight": 0}, "invalid weight: 0 (a whole number >= 1)"),
        ("/queues/sbxQ/partitions/t/limits", {"partitionRate": "1/1"}, "unknown limit 'partition_rate' (allowed: "
         "concurrency, worker_concurrency, rate, weight)"),
    ]  # fmt: skip
    for path, body, error in cases:
        r = http.put(path, json=body)
        assert (r.status_code, r.get_json()) == (400, {"error": error}), (path, body)
    r = http.put("/queues/sbxQ/limits", data="[1]", content_type="application/json")
    assert (r.status_code, r.get_json()) == (400, {"error": "body must be a JSON object of limits"})
    assert rows(sql) == before


def test_cli_queue_show_set_reset(rt: Runtime, sql: Sql) -> None:
    sql("DELETE FROM dbos.queue_partition_limits")
    sql("DELETE FROM dbos.queue_limits")
    rt.reconciler().write_env_limits()
    shown = ops("queue", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [q["queue"] for q in json.loads(shown.stdout)] == ["sbxQ"]

    done = ops("queue", "set", "sbxQ", "--concurrency", "3", "--rate", "5/2", "--priority", "off")
    assert done.returncode == 0, done.stderr
    assert "sbxQ (operator): concurrency 3, worker none, rate 5/2s" in done.stdout
    assert "priority off" in done.stdout
    done = ops("queue", "set", "sbxQ", "--partition", "tenant-a", "--weight", "2", "--concurrency", "none")
    assert done.returncode == 0, done.stderr
    assert "partition tenant-a: weight 2" in done.stdout

    bad = ops("queue", "set", "sbxQ", "--rate", "fast")
    assert bad.returncode == 1
    assert "error: invalid rate: 'fast'" in bad.stderr
    assert ops("queue", "set", "sbxQ").returncode == 1  # nothing to set
    assert ops("queue", "set", "elsewhereQ", "--concurrency", "1").returncode == 1
    queues, parts = rows(sql)
    assert [
        (q["concurrency"], q["rate_limit"], q["rate_period_ms"], q["priority_enabled"]) for q in queues
    ] == [(3, 5, 2000, False)]
    assert [(p["partition_key"], p["weight"], p["concurrency"]) for p in parts] == [("tenant-a", 2, None)]

    reset = ops("queue", "reset", "sbxQ")
    assert reset.returncode == 0, reset.stderr
    assert "sbxQ (env)" in reset.stdout
    assert rows(sql)[1] == []
    assert ops("queue", "--help").returncode == 0
