"""A durable sleep started over HTTP survives a kill -9 of its worker mid-sleep (contract-api §10,
seed 001 lab J, seed 002 walkthrough E): the wake-up time recorded when the sleep started does not
move, the fresh worker wakes the workflow at that time (or at once if it has passed), not after a
fresh full sleep, and nothing before the sleep runs again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from kodo import clock
from kodo.api import create_app
from kodo.runtime import Runtime
from tests.support.helpers import Sql, poll

pytestmark = pytest.mark.chaos

SLEEP_MS = 4000
KILL_INTO_SLEEP_S = 1.5
WF = "sleep_chaos_kill"


@pytest.fixture
def http(rt: Runtime) -> FlaskClient:
    return create_app(runtime=rt).test_client()


def sleep_artifacts(sql: Sql, wid: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT step_id, idx, created_at FROM app.artifacts WHERE run_id = %s AND step_id LIKE 'sleep-%%' "
        "ORDER BY created_at, step_id, idx",
        (wid,),
    )


def recorded_wake_at(rt: Runtime, wid: str) -> int:
    [sleep] = [s for s in rt.client.steps(wid) if s["function_name"] == "kodo.sleep"]
    return int(json.loads(sleep["output"])["wake_at"])


def test_a_sleep_wakes_at_its_recorded_time_across_a_worker_kill(
    http: FlaskClient, rt: Runtime, sql: Sql, start_worker: Callable[..., Any]
) -> None:
    worker = start_worker(queues="controlQ", concurrency=1)
    assert http.post(f"/api/ops/sleep?wf={WF}&sleep={SLEEP_MS}").status_code == 202
    poll(lambda: rt.client.get(WF)["wait_reason"] == "sleep", 15, "the sleep parked")
    wake_at = recorded_wake_at(rt, WF)
    assert rt.client.get(WF)["wake_at_epoch_ms"] == wake_at
    assert [a["step_id"] for a in sleep_artifacts(sql, WF)] == ["sleep-before-sleep"] * 5

    time.sleep(KILL_INTO_SLEEP_S)
    killed_at = worker.kill9()
    assert killed_at < wake_at - 1000  # mid-sleep
    assert rt.client.get(WF)["wake_at_epoch_ms"] == wake_at  # the kill changed nothing

    start_worker(queues="controlQ", concurrency=1)
    back_at = clock.now_ms()
    done = rt.client.wait(WF, 30)
    assert done["status"] == "SUCCESS"

    steps = rt.client.steps(WF)
    assert [s["function_name"] for s in steps] == [
        "TimeWorkflow.recordWakeMetadata",
        "kodo.sleep",
        "TimeWorkflow.recordWakeMetadata",
    ]
    assert recorded_wake_at(rt, WF) == wake_at  # fixed when the sleep started
    woke = int(steps[2]["started_at_epoch_ms"])
    assert woke >= wake_at  # not early
    assert woke <= max(wake_at, back_at) + 2000  # on time (or as soon as a worker was back)
    assert woke < back_at + SLEEP_MS  # not a fresh full sleep from the restart

    arts = sleep_artifacts(sql, WF)
    assert [a["step_id"] for a in arts] == ["sleep-before-sleep"] * 5 + ["sleep-after-sleep"] * 5
    after_at = min(int(a["created_at"].timestamp() * 1000) for a in arts[5:])
    assert wake_at <= after_at + 5  # timestamptz is µs, the wake-up ms: allow the rounding
