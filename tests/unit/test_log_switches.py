"""The log switches of the deployed processes: KODO_ACCESS_LOG (kodo.api.gunicorn_conf) and
KODO_TASK_LOG (workers.tasklog, which the Procfile's and docker-compose.yml's workers load with `-I`),
both off by default. tests/e2e/test_quiet_logs.py runs the processes."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import yaml

import kodo.api.gunicorn_conf
from kodo.config import log_settings
from kodo.errors import ConfigError
from ops import procfile
from ops.processes import REPO


@pytest.fixture
def gunicorn_conf(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], ModuleType]]:
    """gunicorn's configuration module as gunicorn loads it, under KODO_ACCESS_LOG=value."""

    def load(value: str | None) -> ModuleType:
        if value is None:
            monkeypatch.delenv("KODO_ACCESS_LOG", raising=False)
        else:
            monkeypatch.setenv("KODO_ACCESS_LOG", value)
        return importlib.reload(kodo.api.gunicorn_conf)

    yield load
    monkeypatch.delenv("KODO_ACCESS_LOG", raising=False)
    importlib.reload(kodo.api.gunicorn_conf)


def test_the_access_log_is_off_unless_kodo_access_log(
    gunicorn_conf: Callable[[str | None], ModuleType],
) -> None:
    for value, want in [(None, None), ("", None), ("0", None), ("false", None), ("1", "-"), ("TRUE", "-")]:
        assert gunicorn_conf(value).accesslog == want, value
    with pytest.raises(ConfigError, match="invalid boolean env value: yes"):
        gunicorn_conf("yes")


def test_the_task_log_switch() -> None:
    assert log_settings({}) == log_settings({"KODO_TASK_LOG": "0", "KODO_ACCESS_LOG": " "})
    assert not log_settings({}).task_log and not log_settings({}).access_log
    assert log_settings({"KODO_TASK_LOG": "1"}).task_log
    with pytest.raises(ConfigError):
        log_settings({"KODO_TASK_LOG": "on"})


def test_tasklog_quiets_only_the_per_task_loggers() -> None:
    names = ("celery.worker.strategy", "celery.app.trace", "kodo.worker.task", "kodo.worker")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        tasklog = importlib.import_module("workers.tasklog")  # applies KODO_TASK_LOG (unset: off)
        assert set(tasklog.TASK_LOGGERS) == set(names[:3])
        assert not logging.getLogger("celery.app.trace").isEnabledFor(logging.INFO)
        tasklog.apply(False)
        for name in tasklog.TASK_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger("kodo.worker").level == levels["kodo.worker"]
        tasklog.apply(True)  # the worker's own level again (--loglevel)
        assert all(logging.getLogger(name).level == logging.NOTSET for name in tasklog.TASK_LOGGERS)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_procfile_and_compose_agree_on_the_quiet_default() -> None:
    lines = procfile.procfile_entries()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for command in (lines["api"], " ".join(compose["api"]["command"])):
        assert "--access-logfile" not in command and "python:kodo.api.gunicorn_conf" in command
    for command in (
        lines["intent"],
        lines["sbx"],
        *(" ".join(compose[s]["command"]) for s in ("intent-worker", "sbx-worker")),
    ):
        assert "-I workers.tasklog" in command and "--loglevel INFO" in command  # INFO: "ready." stays
    env = compose["api"]["environment"]  # the shared x-kodo environment: the host's switches pass through
    assert env["KODO_ACCESS_LOG"] == "${KODO_ACCESS_LOG:-}" and env["KODO_TASK_LOG"] == "${KODO_TASK_LOG:-}"
