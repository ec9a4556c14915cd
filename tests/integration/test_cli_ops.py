"""The ops plane on the command line (`python -m ops workflow ...`, `python -m ops ops ...`; seed 001
lab N, contract-api §15.2 ops-kit): the same shapes as the HTTP routes, the batch commands read ids
from stdin, print one line per id, audit what they did, and exit 1 if any id failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from kodo.runtime import Runtime
from tests.support import workflows as t
from tests.support.helpers import Sql, deliver_until_settled, insert_unpublished
from tests.support.procs import REPO

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def kodo(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        check=False,
        cwd=REPO,
        env=dict(os.environ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def audit_ops(sql: Sql, wid: str) -> list[dict[str, Any]]:
    rows = sql(
        "SELECT inline FROM app.artifacts WHERE step_id = 'OPS' AND inline->>'targetWorkflowID' = %s "
        "ORDER BY created_at",
        (wid,),
    )
    return [r["inline"] for r in rows]


@pytest.mark.parametrize(
    "command",
    [
        ["workflow"],
        ["workflow", "list"],
        ["workflow", "status"],
        ["workflow", "steps"],
        ["ops"],
        ["ops", "list-failed"],
        ["ops", "cancel-batch"],
        ["ops", "resume-batch"],
        ["ops", "fork-batch"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    out = kodo(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: kodo {' '.join(command)}")


@pytest.mark.parametrize(
    "args",
    [
        ["workflow", "list", "--status", "RUNNING"],
        ["workflow", "list", "--limit", "0"],
        ["workflow", "list", "--limit", "201"],
        ["workflow", "status"],
        ["ops", "fork-batch"],
        ["ops", "fork-batch", "0"],
        ["ops", "fork-batch", "x"],
        ["ops", "nope"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert kodo(*args).returncode == 2


def test_workflow_list_status_and_steps(rt: Runtime, sql: Sql, version: str) -> None:
    wid = f"cli-w-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    deliver_until_settled(rt, wid)
    out = kodo("workflow", "list", "--name", "four_steps", "--status", "SUCCESS", "--limit", "200")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    mine = [w for w in listed if w["workflowID"] == wid]
    assert [(w["status"], w["workflowName"], w["workflowClassName"]) for w in mine] == [
        ("SUCCESS", "four_steps", "t")
    ]
    assert {w["status"] for w in listed} == {"SUCCESS"}
    assert len(json.loads(kodo("workflow", "list", "--limit", "1").stdout)) == 1

    status = json.loads(kodo("workflow", "status", wid).stdout)
    assert (status["workflowID"], status["status"], status["audit"]) == (wid, "SUCCESS", [])
    steps = json.loads(kodo("workflow", "steps", wid).stdout)
    assert [(s["functionId"], s["stepId"], s["status"]) for s in steps] == [
        (i, "t.noop", "SUCCESS") for i in range(4)
    ]
    missing = kodo("workflow", "status", "no-such-wf")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: workflow not found: no-such-wf")
    assert kodo("workflow", "steps", "no-such-wf").returncode == 1


def test_list_failed_prints_the_ids_of_failed_workflows(rt: Runtime, sql: Sql, version: str) -> None:
    failed, exceeded, fine = (f"cli-lf-{version}-{s}" for s in ("err", "mrae", "ok"))
    for wid in (failed, exceeded, fine):
        insert_unpublished(rt, t.four_steps, workflow_id=wid)
    sql("UPDATE dbos.workflow_status SET status = 'ERROR' WHERE workflow_uuid = %s", (failed,))
    sql(
        "UPDATE dbos.workflow_status SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' WHERE workflow_uuid = %s",
        (exceeded,),
    )
    out = kodo("ops", "list-failed")
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert failed in ids and exceeded in ids and fine not in ids
    statuses = {
        r["status"]
        for r in sql("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,))
    }
    assert statuses <= {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def test_cancel_and_resume_batches_audit_what_they_did(rt: Runtime, sql: Sql, version: str) -> None:
    queued, done = f"cli-b-{version}-q", f"cli-b-{version}-done"
    insert_unpublished(rt, t.four_steps, workflow_id=queued)
    insert_unpublished(rt, t.four_steps, workflow_id=done)
    deliver_until_settled(rt, done)
    ids = f"{queued}\n\n# a comment\n{done}\nno-such-wf\n"

    out = kodo("ops", "cancel-batch", "--actor", "oncall", "--reason", "drain", stdin=ids)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"Cancelling workflow {queued}: cancelled",
        f"Cancelling workflow {done}: failed: cannot cancel workflow in status SUCCESS",
        "Cancelling workflow no-such-wf: failed: workflow not found: no-such-wf",
    ]
    assert "2 of 3 failed" in out.stderr
    assert rt.client.get(queued)["status"] == "CANCELLED"
    [cancel] = audit_ops(sql, queued)
    assert {k: cancel[k] for k in ("op", "actor", "reason")} == {
        "op": "cancel",
        "actor": "oncall",
        "reason": "drain",
    }
    assert audit_ops(sql, done) == []

    out = kodo("ops", "resume-batch", stdin=f"{queued}\n")
    assert (out.returncode, out.stdout.strip()) == (0, f"Resuming workflow {queued}: resumed")
    assert rt.client.get(queued)["status"] in ("ENQUEUED", "PENDING", "SUCCESS")
    assert [a["op"] for a in audit_ops(sql, queued)] == ["cancel", "resume"]
    assert "actor" not in audit_ops(sql, queued)[1]

    empty = kodo("ops", "cancel-batch", stdin="")
    assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (0, "", "no workflow ids on stdin")


def test_fork_batch_forks_each_id_at_the_step_onto_the_version(rt: Runtime, sql: Sql, version: str) -> None:
    wid = f"cli-f-{version}"
    insert_unpublished(rt, t.four_steps, workflow_id=wid)
    deliver_until_settled(rt, wid)
    out = kodo("ops", "fork-batch", "2", "v-fork", "--actor", "qa", stdin=f"{wid}\n")
    assert out.returncode == 0, out.stderr
    match = re.fullmatch(
        rf"Forking workflow {re.escape(wid)}: forked at step 2 as ({UUID})", out.stdout.strip()
    )
    assert match, out.stdout
    forked = match.group(1)
    row = rt.client.get(forked)
    assert (row["forked_from"], row["application_version"]) == (wid, "v-fork")
    assert [s["function_id"] for s in rt.client.steps(forked)] == [1, 2]  # functionIds 0 and 1 copied
    [fork] = audit_ops(sql, wid)
    assert (fork["op"], fork["actor"], fork["forkedWorkflowID"]) == ("fork", "qa", forked)

    past = kodo("ops", "fork-batch", "4", stdin=f"{wid}\n")
    assert past.returncode == 1
    assert past.stdout.strip() == f"Forking workflow {wid}: failed: fork stepN 4 exceeds max step 3"
    assert len(audit_ops(sql, wid)) == 1
