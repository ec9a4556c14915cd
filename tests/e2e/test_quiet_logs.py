"""What the deployed processes log (the Procfile's command lines, as `mise run start` runs them): by
default no line per request or per task, only start-up lines (which the scripts and tests wait for),
warnings and errors; KODO_ACCESS_LOG=1 adds the API's access log, KODO_TASK_LOG=1 the workers'
per-task lines (kodo.api.gunicorn_conf, workers.tasklog)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from tests.e2e.live import LiveSystem, SystemFactory


def _crashdemo(system: LiveSystem) -> str:
    """A crash-demo workflow (two steps, a sleep between) run to its end over HTTP."""
    wf = f"e2e-logs-{uuid.uuid4().hex[:8]}"
    assert system.post(f"/crashdemo?wf={wf}").status_code == 202
    deadline = time.monotonic() + 30
    while (marks := system.get(f"/marks?wf={wf}").json()) != {"s1": 1, "s2": 1}:
        assert time.monotonic() < deadline, f"{wf}: marks {marks}\n{system.logs()}"
        time.sleep(0.05)
    return wf


def _log(system: LiveSystem, name: str) -> str:
    return system.procs[name].log.read_text(errors="replace")


def _eventually(what: str, cond: Callable[[], bool], system: LiveSystem) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"no {what}\n{system.logs(60)}"
        time.sleep(0.05)


def test_by_default_no_line_per_request_or_task_but_start_up_lines(make_system: SystemFactory) -> None:
    system = make_system("quiet").start("api", "intent")
    wf = _crashdemo(system)
    time.sleep(0.5)  # what the last requests and deliveries would have written
    api, intent = _log(system, "api"), _log(system, "intent")
    assert "Listening at: http://127.0.0.1:" in api  # gunicorn's start-up lines stay
    assert f"/crashdemo?wf={wf}" not in api and f"/marks?wf={wf}" not in api, api[-3000:]
    assert "ready." in intent  # Celery's, which Stack, start.sh's tests and the proofs wait for
    assert "embedded reconciler started" in intent  # kodo's own INFO lines stay
    assert " received" not in intent and " succeeded in " not in intent, intent[-3000:]
    assert f"kodo.run_workflow {wf} ->" not in intent, intent[-3000:]


def test_the_switches_turn_the_access_log_and_the_per_task_lines_on(make_system: SystemFactory) -> None:
    system = make_system("loud", KODO_ACCESS_LOG="1", KODO_TASK_LOG="true").start("api", "intent")
    wf = _crashdemo(system)
    _eventually(
        "access line", lambda: f'"POST /crashdemo?wf={wf} HTTP/1.1" 202' in _log(system, "api"), system
    )
    _eventually(
        "outcome line", lambda: f"kodo.run_workflow {wf} -> success" in _log(system, "intent"), system
    )
    intent = _log(system, "intent")
    assert "] received" in intent and " succeeded in " in intent, intent[-3000:]
    assert "Listening at: http://127.0.0.1:" in _log(system, "api") and "ready." in intent
