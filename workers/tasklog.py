"""The per-task log lines of a deployed worker, off unless KODO_TASK_LOG is true: the Procfile's and
docker-compose.yml's workers load this module with `celery worker -I workers.tasklog`.

Per task, Celery logs "Task ... received" (`celery.worker.strategy`) and "Task ... succeeded in ..."
(`celery.app.trace`) and the task logs its outcome (`kodo.worker.task`: "kodo.run_workflow <id> ->
success"), all at INFO: under load, nearly all a worker wrote, each line relayed by supervisord. Off,
those three loggers pass warnings and errors only (a failed task's traceback, a retry's warning);
every other INFO line stays, the start-up ones included ("celery@host ready.", which the scripts and
the tests wait for). Workers started without this module (the tests' own) log every line.
"""

from __future__ import annotations

import logging

from kodo.config import log_settings

TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "kodo.worker.task")


def apply(task_log: bool) -> None:
    """The per-task loggers at the worker's own level (`task_log`) or at WARNING. This module is
    imported with the worker's includes (`-I`), before the worker builds its task strategies and
    tracers, which read the level once."""
    for name in TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if task_log else logging.WARNING)


apply(log_settings().task_log)
