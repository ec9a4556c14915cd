"""Brokers: Redis by default, RabbitMQ by configuration alone; and the engine's task under the
pytest-celery plugin's classic `celery_app` fixture with an in-process Celery worker.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from kodo.config import Settings
from kodo.dispatch import RUN_WORKFLOW_TASK, celery_settings
from kodo.runtime import Runtime
from tests.conftest import TEST_REDIS, effects_of
from tests.support import workflows as t

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def rabbitmq() -> str:
    """RabbitMQ on 127.0.0.1:5672, started if it is installed but down."""
    if not _port_open(5672) and shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _port_open(5672):
            time.sleep(0.5)
    assert _port_open(5672), "RabbitMQ is not reachable on 127.0.0.1:5672 and could not be started"
    return AMQP_URL


def test_rabbitmq_is_the_broker_by_configuration_alone(
    rabbitmq: str,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    start_worker: Callable[..., Any],
    sql: Callable[..., list[dict[str, Any]]],
) -> None:
    monkeypatch.setenv("KODO_BROKER_URL", rabbitmq)
    rt = Runtime.build(Settings.from_env())
    assert rt.settings.broker_url.startswith("amqp://")
    worker = start_worker(env={"KODO_BROKER_URL": rabbitmq})
    assert "amqp://" in worker.log.read_text()
    rt.client.start(t.sleeper, 0.2, workflow_id=f"amqp-{version}")
    row = rt.client.wait(f"amqp-{version}", 30)
    assert row["status"] == "SUCCESS"
    assert effects_of(sql, f"amqp-{version}") == {"before": 1, "after": 1}


@pytest.fixture(scope="module")
def celery_config() -> dict[str, Any]:
    conf = celery_settings(Settings.from_env())
    conf["broker_url"] = TEST_REDIS
    return conf


@pytest.fixture
def embedded_worker(celery_app: Celery, settings: Settings) -> Iterator[Runtime]:
    """The pytest-celery classic app with kodo's task, consumed by an in-process worker."""
    rt = Runtime.build(settings, celery_app=celery_app)

    @celery_app.task(name=RUN_WORKFLOW_TASK, acks_late=True, reject_on_worker_lost=True)
    def run_workflow(workflow_id: str) -> str:
        return str(rt.engine.execute(workflow_id))

    with start_worker(celery_app, pool="solo", perform_ping_check=False, queues=["intentQ"]):
        yield rt


def test_engine_task_runs_under_the_pytest_celery_app(
    embedded_worker: Runtime, version: str, sql: Callable[..., list[dict[str, Any]]]
) -> None:
    wid = f"embedded-{version}"
    embedded_worker.client.start(t.effects, 3, workflow_id=wid)
    assert embedded_worker.client.wait(wid, 30)["status"] == "SUCCESS"
    assert effects_of(sql, wid) == {"e0": 1, "e1": 1, "e2": 1}
