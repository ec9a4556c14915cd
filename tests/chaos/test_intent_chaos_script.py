"""The intent chaos proof (`python -m ops.intentchaos`, task `wf:intent:chaos`) as a real subprocess.

One round against the test database and broker (tests/conftest.py BASE_ENV): the real API (the shim),
an intent worker, an sbx worker with CHAOS_SLEEP_EXECUTE=5000 and the reconciler; the run is
approved at once, the sbx worker is killed with kill -9 while its sandbox tasks sleep, and a second
worker takes over. The command must exit 0 and report the round converged with every oracle at its
value; the run's rows are then read back from the database, independently of the script's report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ops import intentchaos, processes
from tests.support.intent import Sql

pytestmark = pytest.mark.chaos

TASKS = 5  # the script's default, the original's five sandbox runs


def test_intent_chaos_one_round_succeeds_with_no_duplicate_effects(sql: Sql) -> None:
    port, admin_port = processes.free_port(), processes.free_port()
    while admin_port == port:
        admin_port = processes.free_port()
    argv = [
        sys.executable, "-m", "ops.intentchaos", "--rounds", "1",
        "--port", str(port), "--admin-port", str(admin_port),
    ]  # fmt: skip
    env = processes.child_env(os.environ)  # APP_DB_NAME / broker of the test run (conftest)
    done = subprocess.run(
        argv, cwd=processes.REPO, env=env, capture_output=True, text=True, timeout=150, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out

    [line] = [ln for ln in done.stdout.splitlines() if re.match(r"round \d+/\d+ ", ln)]
    assert line.startswith("round 1/1 kill=sbx "), out
    assert line.endswith(" converged"), out
    assert " status=succeeded " in line, out
    assert " CompileST=a1 ApplyPatchST=a1 DecideST=a1 ExecuteST=a1 " in line, out
    assert f" receipts=1 dup_receipts=0 sbx_runs={TASKS} dup_sbx=0 " in line, out
    assert " workflow=SUCCESS " in line, out
    # The kill landed inside ExecuteST: tasks held by the sbx worker, none recorded yet.
    at_kill = re.search(r"at_kill=\[([^\]]*)\]", line)
    assert at_kill is not None, out
    assert "last_step=DecideST" in at_kill.group(1) and at_kill.group(1).endswith(" sbx_runs=0"), out
    held = re.search(r"held_by_sbx_worker=(\d+)", at_kill.group(1))
    assert held is not None and int(held.group(1)) >= 1, out
    recovered = re.search(r" children_recovered=(\d+) ", line)
    assert recovered is not None and int(recovered.group(1)) >= int(held.group(1)), out
    recovery = re.search(r" recovery=([\d.]+)s ", line)
    assert recovery is not None and 0 < float(recovery.group(1)) < intentchaos.MAX_MEDIAN_RECOVERY_S, out

    [summary] = [ln for ln in done.stdout.splitlines() if ln.startswith("summary:")]
    assert "converged=1/1 " in summary and " dup_receipts=0 dup_sbx=0 " in summary, out
    assert summary.endswith("PASS"), out

    # The database, read without the script: the run it reports, and its effects.
    run = re.search(r" run=(run_\w+) ", line)
    assert run is not None, out
    run_id = run.group(1)
    assert sql("SELECT status FROM app.runs WHERE id = %s", (run_id,)) == [{"status": "succeeded"}]
    steps = sql(
        "SELECT step_id, attempt FROM app.run_steps WHERE run_id = %s ORDER BY started_at, step_id", (run_id,)
    )
    assert [(s["step_id"], s["attempt"]) for s in steps] == [
        ("CompileST", 1), ("ApplyPatchST", 1), ("DecideST", 1), ("ExecuteST", 1),
    ]  # fmt: skip
    assert sql("SELECT seen_count FROM app.mock_receipts WHERE run_id = %s", (run_id,)) == [{"seen_count": 1}]
    sbx = sql("SELECT task_key, attempt, err_code FROM app.sbx_runs WHERE run_id = %s", (run_id,))
    assert len(sbx) == TASKS and len({r["task_key"] for r in sbx}) == TASKS
    assert {(r["attempt"], r["err_code"]) for r in sbx} == {(1, "NONE")}
