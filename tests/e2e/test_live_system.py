"""The e2e harness itself: the processes serve, the proof routes run, workers can be killed and restarted."""

from __future__ import annotations

import time
import uuid

import pytest

from ops import processes
from ops.testrun import UsageError, map_path, pytest_args
from tests.e2e.live import LiveSystem, SystemFactory


def _wait_marks(system: LiveSystem, wf: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (marks := system.get(f"/marks?wf={wf}").json()) != {"s1": 1, "s2": 1}:
        assert time.monotonic() < deadline, f"{wf}: marks {marks}\n{system.logs()}"
        time.sleep(0.05)


def test_every_process_serves(live_system: LiveSystem) -> None:
    r = live_system.get("/healthz")
    assert (r.status_code, r.json(), r.headers["content-type"]) == (200, {"ok": True}, "application/json")
    assert live_system.http.get(f"{live_system.admin}/healthz", timeout=5).json()["ok"] is True
    for name in ("reconciler", "api", "intent", "sbx"):
        assert live_system.procs[name].running(), name
    # the SQL helper reads the same database the processes write
    assert live_system.scalar("SELECT current_database()") == live_system.database_url.rsplit("/", 1)[-1]


def test_crashdemo_runs_on_the_live_workers_under_this_modules_version(live_system: LiveSystem) -> None:
    wf = f"e2e-harness-{uuid.uuid4().hex[:8]}"
    r = live_system.post(f"/crashdemo?wf={wf}")
    assert (r.status_code, r.json()) == (202, {"accepted": True, "workflowId": wf})
    _wait_marks(live_system, wf)
    row = live_system.sql(
        "SELECT status, application_version FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,)
    )
    assert row == [{"status": "SUCCESS", "application_version": live_system.version}]


def test_a_killed_worker_is_restarted_and_work_goes_on(live_system: LiveSystem) -> None:
    old = live_system.procs["intent"].pid
    live_system.restart("intent")
    assert live_system.procs["intent"].pid != old
    assert not processes.pid_alive(old)
    wf = f"e2e-restart-{uuid.uuid4().hex[:8]}"
    assert live_system.post(f"/crashdemo?wf={wf}").status_code == 202
    _wait_marks(live_system, wf)


def test_split_topology_shim_enqueues_and_only_a_worker_executes(make_system: SystemFactory) -> None:
    system = make_system("split").start("api")
    assert set(system.procs) == {"api"}
    wf = f"e2e-split-{uuid.uuid4().hex[:8]}"
    assert system.post(f"/crashdemo?wf={wf}").status_code == 202
    time.sleep(1.0)
    assert system.get(f"/marks?wf={wf}").json() == {"s1": 0, "s2": 0}
    assert (
        system.scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,)) == "ENQUEUED"
    )
    system.start_workers()
    _wait_marks(system, wf)


def test_runbook_test_paths_map_to_our_files() -> None:
    assert map_path("test/e2e/run-view-golden.test.ts") == "tests/e2e/test_run_view_golden.py"
    assert map_path("test/e2e/api-shim.test.ts") == "tests/e2e/test_api_shim.py"
    assert map_path("test/e2e/plan-approval-api.test.ts") == "tests/e2e/test_plan_approval_api.py"
    assert map_path("tests/e2e/test_api_shim.py::test_x") == "tests/e2e/test_api_shim.py::test_x"
    assert (
        map_path("test/integration/queue-partition-fairness.test.ts")
        == "tests/integration/test_queue_partition_fairness.py"
    )


def test_file_tasks_need_a_file_and_suites_default_to_their_directory() -> None:
    with pytest.raises(UsageError):
        pytest_args(["-q"], "tests/e2e", need_file=True)
    assert pytest_args(["-q"], "tests/e2e", need_file=False) == ["-q", "tests/e2e"]
    assert pytest_args(["-m", "not chaos"], None, need_file=False) == ["-m", "not chaos"]
    assert pytest_args(["test/e2e/api-shim.test.ts", "-q"], "tests/e2e", need_file=True) == [
        "tests/e2e/test_api_shim.py",
        "-q",
    ]


def test_runbook_sql_helpers_print_bare_values(live_system: LiveSystem) -> None:
    """sql_app / sql_sys (ops/db/psql-*.sh): `-tA -c` prints the value alone; each puts its schema first."""
    assert live_system.sql_app("SELECT COUNT(*) FROM app.runs") == str(
        live_system.scalar("SELECT COUNT(*) FROM app.runs")
    )
    assert live_system.sql_app("SHOW search_path") == "app,public"
    assert live_system.sql_sys("SHOW search_path") == "dbos,public"
    n = live_system.scalar("SELECT COUNT(*) FROM dbos.workflow_status")
    assert live_system.sql_sys("SELECT COUNT(*) FROM workflow_status") == str(n)
