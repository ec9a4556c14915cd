"""Intent runs on real workers with the live compiler and real sandboxes.

`OC_MODE=live` talks to the OpenCode stand-in `ops.ocmock` (real HTTP, served from this test process);
`SBX_PROVIDER=local` runs real subprocesses; `SBX_PROVIDER=e2b` drives the real `e2b` SDK against the
local E2B stand-in `tests/support/fake_e2b.py`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from kodo.runtime import Runtime
from ops import ocmock
from tests.support import fake_e2b, procs
from tests.support.intent import Sql, start_run, wait_run

Worker = Callable[..., procs.WorkerProc]


@pytest.fixture
def oc() -> Iterator[ocmock.MockServer]:
    server = ocmock.start()
    yield server
    server.shutdown()
    server.server_close()


def _prompts(server: ocmock.MockServer) -> list[dict[str, Any]]:
    return list(httpx.get(server.url + "/calls").json()["calls"])


def _oc_calls(sql: Sql, run_id: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT step_id, agent, op_key, session_id, structured, error FROM app.opencode_calls "
        "WHERE run_id = %s ORDER BY created_at",
        (run_id,),
    )


def _live(server_url: str, **extra: str) -> dict[str, str]:
    return {"OC_MODE": "live", "OC_BASE_URL": server_url, **extra}


def _step(sql: Sql, run_id: str, step_id: str) -> dict[str, Any]:
    [row] = sql(
        "SELECT attempt, output FROM app.run_steps WHERE run_id = %s AND step_id = %s", (run_id, step_id)
    )
    return row


def test_live_compiler_one_ledgered_call_per_step_in_one_session(
    rt: Runtime, sql: Sql, start_worker: Worker, oc: ocmock.MockServer
) -> None:
    start_worker(env=_live(oc.url))
    _, run_id = start_run(rt, sql, "live goal", approved=True)
    wait_run(sql, run_id, "succeeded")
    plan = _step(sql, run_id, "CompileST")["output"]
    assert plan["goal"] == "default goal" and plan["tests"] == [f"test{i}.ts" for i in range(5)]
    calls = _oc_calls(sql, run_id)
    assert [(c["step_id"], c["agent"]) for c in calls] == [("CompileST", "plan"), ("DecideST", "build")]
    assert len({c["session_id"] for c in calls}) == 1 and calls[0]["session_id"].startswith("ses_")
    assert all(len(c["op_key"]) == 64 and c["error"] is None for c in calls)
    assert [p["agent"] for p in _prompts(oc)] == ["plan", "build"]
    # The build answer's command ran once per test (mock sandbox): five tasks.
    tasks = sql("SELECT request->>'cmd' AS cmd FROM app.sbx_runs WHERE run_id = %s ORDER BY 1", (run_id,))
    assert [t["cmd"] for t in tasks] == [f"echo running test{i}.ts" for i in range(5)]


def test_a_kill_between_the_ledger_write_and_the_checkpoint_does_not_call_the_model_again(
    rt: Runtime, sql: Sql, start_worker: Worker, oc: ocmock.MockServer
) -> None:
    first = start_worker(name="dies", env=_live(oc.url), faults="oc.recorded@CompileST")
    _, run_id = start_run(rt, sql, "crash after the call", approved=True)
    first.wait_fault()  # the answer is in the ledger; CompileST's checkpoint is not written
    assert [c["step_id"] for c in _oc_calls(sql, run_id)] == ["CompileST"]
    assert sql("SELECT 1 FROM app.run_steps WHERE run_id = %s", (run_id,)) == []
    first.kill9()
    start_worker(name="recovers", env=_live(oc.url))
    wait_run(sql, run_id, "succeeded", timeout=40)
    assert [p["agent"] for p in _prompts(oc)] == ["plan", "build"]  # the plan was asked once
    assert _step(sql, run_id, "CompileST")["attempt"] == 1
    assert [c["step_id"] for c in _oc_calls(sql, run_id)] == ["CompileST", "DecideST"]


def test_a_replayed_answer_is_ledgered_in_its_steps_transaction(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    """OC_MODE=replay calls no model: the ledger row commits with the step's checkpoint (no commit of
    its own), so a kill before that commit leaves neither, and the step run again writes one row."""
    first = start_worker(name="dies", env={"OC_MODE": "replay"}, faults="oc.recorded@CompileST")
    _, run_id = start_run(rt, sql, "replayed crash", approved=True)
    first.wait_fault()  # the row is written in CompileST's open transaction, not committed
    assert _oc_calls(sql, run_id) == []
    assert sql("SELECT 1 FROM app.run_steps WHERE run_id = %s", (run_id,)) == []
    first.kill9()
    start_worker(name="recovers", env={"OC_MODE": "replay"})
    wait_run(sql, run_id, "succeeded", timeout=40)
    calls = _oc_calls(sql, run_id)
    assert [c["step_id"] for c in calls] == ["CompileST", "DecideST"]
    assert all(c["error"] is None and c["structured"] is not None for c in calls)
    assert _step(sql, run_id, "CompileST")["attempt"] == 1


def test_strict_mode_fails_the_run_when_the_daemon_is_unreachable(
    rt: Runtime, sql: Sql, start_worker: Worker
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    start_worker(env=_live(f"http://127.0.0.1:{closed}", OC_STRICT_MODE="1"))
    _, run_id = start_run(rt, sql, "strict", approved=True)
    row = wait_run(sql, run_id, "retries_exceeded")
    assert "oc_live_unavailable" in row["error"] and row["next_action"] == "REPAIR"
    assert sql("SELECT 1 FROM app.run_steps WHERE run_id = %s", (run_id,)) == []


def test_local_sandbox_runs_the_real_command_end_to_end(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    start_worker(env={"SBX_MODE": "live", "SBX_PROVIDER": "local"})
    command = "echo hello; echo '{\"ok\":true}' > result.json"
    _, ok = start_run(
        rt, sql, "real command", constraints={"testHooks": {"testCommand": command}}, approved=True
    )
    _, bad = start_run(
        rt, sql, "failing command", constraints={"testHooks": {"testCommand": "exit 3"}}, approved=True
    )
    wait_run(sql, ok, "succeeded")
    execute = _step(sql, ok, "ExecuteST")["output"]
    assert (execute["stdout"], execute["errCode"], execute["exit"]) == ("hello\n", "NONE", 0)
    assert [f["path"] for f in execute["filesOut"]] == ["result.json"]
    [sbx] = sql("SELECT provider, task_key, err_code, response FROM app.sbx_runs WHERE run_id = %s", (ok,))
    assert (sbx["provider"], sbx["err_code"]) == ("local", "NONE")
    assert sbx["response"]["metrics"]["wallMs"] >= 1
    chunks = sql(
        "SELECT topic, message FROM dbos.notifications WHERE destination_uuid = %s ORDER BY seq",
        (sbx["task_key"],),
    )
    assert [(c["topic"], json.loads(c["message"]).get("chunk")) for c in chunks] == [
        ("stdout", "hello\n"),
        ("stream_closed", None),
    ]
    kinds = sql(
        "SELECT kind FROM app.artifacts WHERE run_id = %s AND step_id = 'ExecuteST' ORDER BY idx", (ok,)
    )
    assert "file" in [k["kind"] for k in kinds]
    row = wait_run(sql, bad, "retries_exceeded")
    assert row["error"] == "SBX execution failed [CMD_NONZERO]"
    assert [r["err_code"] for r in sql("SELECT err_code FROM app.sbx_runs WHERE run_id = %s", (bad,))] == [
        "CMD_NONZERO"
    ]


def test_e2b_sandbox_end_to_end_through_the_sdk(rt: Runtime, sql: Sql, start_worker: Worker) -> None:
    e2b = fake_e2b.start()
    try:
        start_worker(
            env={
                "SBX_MODE": "live",
                "SBX_PROVIDER": "e2b",
                "E2B_API_KEY": "e2b_test_key",
                "E2B_API_URL": e2b.url,
                "E2B_SANDBOX_URL": e2b.url,
            }
        )
        _, run_id = start_run(
            rt, sql, "e2b", constraints={"testHooks": {"testCommand": "echo from-e2b"}}, approved=True
        )
        wait_run(sql, run_id, "succeeded")
        execute = _step(sql, run_id, "ExecuteST")["output"]
        assert (execute["stdout"], execute["errCode"]) == ("from-e2b\n", "NONE")
        [sbx_row] = sql("SELECT provider, response FROM app.sbx_runs WHERE run_id = %s", (run_id,))
        [sandbox] = e2b.state.sandboxes.values()
        assert sbx_row["provider"] == "e2b" and sbx_row["response"]["raw"]["sandboxId"] == sandbox.id
        assert sandbox.killed and sandbox.commands[0]["cmd"] == "echo from-e2b"
        task_key = sbx_row["response"]["taskKey"]
        chunks = sql(
            "SELECT topic FROM dbos.notifications WHERE destination_uuid = %s ORDER BY seq", (task_key,)
        )
        assert [c["topic"] for c in chunks] == ["stdout", "stream_closed"]
    finally:
        e2b.close()
