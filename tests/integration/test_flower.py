"""Flower shows the work: a real Flower (the Procfile's `flower`: `python -m workers.flower`) on a free port, on a Redis db of
its own (Flower talks to every worker on its broker), read through its HTTP API with basic auth.

It sees both worker pools, all three queues with their depths, and a parent run and its sandbox tasks
under their workflow names, including the first task of a worker that started after Flower.
"""

from __future__ import annotations

import ast
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import requests

from kodo.config import Settings
from kodo.db import monitor
from kodo.dispatch import RUN_WORKFLOW_TASK
from kodo.runtime import Runtime
from ops import processes
from ops.procfile import procfile_argv
from tests.conftest import TEST_REDIS
from tests.support import workflows as t
from tests.support.intent import start_run, wait_run
from workers.events import EventsFollowMonitor

Sql = Callable[..., list[dict[str, Any]]]
Worker = Callable[..., Any]
AUTH = ("ops", "flower-pw")
Json = dict[str, Any]


def _flower_broker() -> str:
    """KODO_TEST_FLOWER_BROKER_URL, else the test broker's Redis with the db next to it."""
    explicit = os.environ.get("KODO_TEST_FLOWER_BROKER_URL")
    if explicit:
        return explicit
    base, _, db = TEST_REDIS.rpartition("/")
    n = int(db or 0)
    return f"{base}/{n - 1 if n > 1 else n + 1}"


FLOWER_BROKER = _flower_broker()


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, worker_env: dict[str, str]) -> Iterator[str]:
    client = redis.Redis.from_url(FLOWER_BROKER)
    client.flushdb()
    monkeypatch.setenv("KODO_BROKER_URL", FLOWER_BROKER)
    worker_env["KODO_BROKER_URL"] = FLOWER_BROKER
    yield FLOWER_BROKER
    client.flushdb()
    client.close()


@pytest.fixture
def start_flower(
    tmp_path: Path, broker: str, worker_env: dict[str, str]
) -> Iterator[Callable[[], tuple[processes.Proc, str]]]:
    started: list[processes.Proc] = []

    def start() -> tuple[processes.Proc, str]:
        port = processes.free_port()
        overrides = {
            "FLOWER_BASIC_AUTH": ":".join(AUTH),
            "KODO_FLOWER_PORT": str(port),
            "KODO_BIND_HOST": None,
        }
        env = processes.child_env(worker_env, overrides)
        proc = processes.spawn("flower", procfile_argv("flower"), env, tmp_path / "flower.log")  # as deployed
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        processes.wait_until("Flower's API", lambda: _up(proc, url), 60, 0.2, detail=proc.tail)
        return proc, url

    yield start
    for proc in started:
        proc.stop(10)


def _up(proc: processes.Proc, url: str) -> bool:
    proc.ensure_running(" before its API answered")
    try:
        return requests.get(f"{url}/api/workers", auth=AUTH, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def api(url: str, path: str) -> Any:
    r = requests.get(f"{url}{path}", auth=AUTH, timeout=10)
    r.raise_for_status()
    return r.json()


def poll(what: str, get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {got}")
        time.sleep(0.3)


def test_flower_shows_both_pools_all_queues_and_the_work_under_workflow_names(
    start_flower: Callable[[], tuple[processes.Proc, str]], start_worker: Worker, sql: Sql, version: str
) -> None:
    rt = Runtime.build(Settings.from_env())
    assert rt.settings.broker_url == FLOWER_BROKER
    # The intent pool runs already when Flower starts; the sbx pool comes up after it, and its first
    # task is the first thing it does.
    intent = start_worker(name="intent", queues="intentQ,controlQ")
    proc, url = start_flower()
    sbx = start_worker(name="sbx", queues="sbxQ")
    hooks = {"testHooks": {"tests": ["one.ts", "two.ts"], "testCommand": "echo ok"}}
    wid, run_id = start_run(rt, sql, "watched", constraints=hooks, approved=True, partition_key="tenant-f")
    wait_run(sql, run_id, "succeeded")
    children = sorted(r["workflow_uuid"] for r in sql(
        "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = %s", (wid,)
    ))  # fmt: skip

    # The tasks, under their workflow names, with the workflow id and partition in their arguments.
    # (A workflow may have several deliveries: the parent's wake-ups, a republished doorbell.)
    def args_of(tasks: Json, name: str) -> set[str]:
        return {
            ast.literal_eval(t["args"])[0]
            for t in tasks.values()
            if t["name"] == name and t["state"] == "SUCCESS"
        }

    def finished(tasks: Json) -> bool:
        return args_of(tasks, "IntentWorkflow.run") == {wid} and args_of(
            tasks, "IntentWorkflow.taskWorkflow"
        ) == set(children)

    tasks = poll("the run's tasks in Flower", lambda: api(url, "/api/tasks"), finished)
    runs = [t for t in tasks.values() if t["name"] == "IntentWorkflow.run"]
    assert len(runs) >= 2  # started, then woken by its last child
    assert all(t["worker"].startswith("intent@") for t in runs)
    assert all(
        ast.literal_eval(t["kwargs"]) == {"workflow_name": "IntentWorkflow.run", "partition_key": None}
        for t in runs
    )
    sandbox = [t for t in tasks.values() if t["name"] == "IntentWorkflow.taskWorkflow"]
    assert all(t["worker"].startswith("sbx@") for t in sandbox)
    assert all(
        ast.literal_eval(t["kwargs"])
        == {"workflow_name": "IntentWorkflow.taskWorkflow", "partition_key": "tenant-f"}
        for t in sandbox
    )
    assert not any(t["name"] == "kodo.run_workflow" for t in tasks.values())

    # Both pools, with the queues each consumes.
    # (A refresh pings the workers with a short timeout: a busy machine may answer one late, so the
    # view is read again until both have answered.)
    workers = poll("both pools in Flower", lambda: api(url, "/api/workers?refresh=1"), lambda w: len(w) >= 2)
    queues_of = {
        name.split("@")[0]: sorted(q["name"] for q in info["active_queues"]) for name, info in workers.items()
    }
    assert queues_of == {"intent": ["controlQ", "intentQ"], "sbx": ["sbxQ"]}

    # All three queues with their depths: with the sbx pool gone, doorbells wait on sbxQ.
    sbx.kill9()
    for i in range(3):
        rt.engine.dispatcher.publish(f"ghost-{i}-{uuid.uuid4().hex[:6]}", "sbxQ")
    depths = poll(
        "sbxQ's depth in Flower",
        lambda: {q["name"]: q["messages"] for q in api(url, "/api/queues/length")["active_queues"]},
        lambda d: d.get("sbxQ") == 3,
    )
    assert depths == {"intentQ": 0, "controlQ": 0, "sbxQ": 3}

    # Basic auth: nothing without the password.
    assert requests.get(f"{url}/api/workers", timeout=5).status_code == 401
    assert requests.get(f"{url}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401

    # Events follow Flower: the worker that ran before it switched them on when it came, and off
    # once it is gone.
    assert "task events on: a monitor (Flower) watches" in intent.text()
    proc.stop(10)
    intent.wait_log("task events off: no monitor watches", 15)


def test_task_events_follow_the_monitor_lock(settings: Settings) -> None:
    """The worker side alone: a dispatcher's `task` group follows the lock's changes, and a worker
    started with -E (every group) is left alone."""
    dispatcher = SimpleNamespace(groups={"worker"})
    follower = EventsFollowMonitor(dispatcher, settings.database_url, interval_s=60)
    follower.sync()
    assert dispatcher.groups == {"worker"}  # no monitor: no task events
    watch = monitor.hold(settings.database_url)
    try:
        follower.sync()
        assert dispatcher.groups == {"worker", "task"}
        everything = SimpleNamespace(groups=set())
        EventsFollowMonitor(everything, settings.database_url).sync()
        assert everything.groups == set()
    finally:
        watch.close()
    # The server releases a closed connection's lock when its backend exits, a moment after the
    # client closed it: the next syncs see it gone (workers sync every 2 s).
    deadline = time.monotonic() + 2
    follower.sync()
    while dispatcher.groups != {"worker"} and time.monotonic() < deadline:
        time.sleep(0.05)
        follower.sync()
    assert dispatcher.groups == {"worker"}
    follower.stop()


def test_the_worker_runs_messages_of_any_producer(rt: Runtime, start_worker: Worker, version: str) -> None:
    """The labels are for the monitors only: an older producer's message (the id alone) and one with
    the labels as real kwargs both run."""
    start_worker(queues="intentQ")
    old, labelled = f"msg-old-{version}", f"msg-kw-{version}"
    with rt.db.tx() as c:  # rows without a doorbell: the messages below are the only ones
        for wid in (old, labelled):
            rt.client.start_txn(c, t.sleeper, (0,), {}, workflow_id=wid)
    app = rt.engine.dispatcher.app  # type: ignore[attr-defined]
    app.send_task(RUN_WORKFLOW_TASK, args=[old], queue="intentQ")
    labels = {"workflow_name": "t.sleeper", "partition_key": None}
    app.send_task(RUN_WORKFLOW_TASK, args=[labelled], kwargs=labels, queue="intentQ", shadow="t.sleeper")
    assert rt.client.wait(old, 30)["status"] == "SUCCESS"
    assert rt.client.wait(labelled, 30)["status"] == "SUCCESS"
