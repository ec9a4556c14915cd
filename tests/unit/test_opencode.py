"""The OpenCode client and the compiler modes, against the local OpenCode stand-in (`ops.ocmock`,
real HTTP on 127.0.0.1). The ledger here is an in-memory one; the Postgres ledger and the kill
between the ledger write and the checkpoint are in tests/integration/test_intent_live.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kodo.config import Settings
from kodo.errors import ConfigError
from kodo.intent import planner
from kodo.intent.opencode import (
    CONCISE,
    OcTimeoutTerminalError,
    OcUnavailableError,
    OpenCodeClient,
    StructuredOutputError,
)
from ops import ocmock


class DictLedger:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def answer(self, op_key: str) -> dict[str, Any] | None:
        row = self.rows.get(op_key)
        return row["response"] if row and row["structured"] is not None else None

    def session_of(self, run_id: str) -> str | None:
        return None

    def record(self, row: dict[str, Any], *, now: bool = True) -> None:
        if (op := self.rows.get(row["op_key"])) and op["structured"] is not None:
            return
        self.rows[row["op_key"]] = json.loads(json.dumps(row))


@pytest.fixture
def oc() -> Iterator[ocmock.MockServer]:
    server = ocmock.start()
    yield server
    server.shutdown()
    server.server_close()


def _push(server: ocmock.MockServer, agent: str, response: dict[str, Any]) -> None:
    httpx.post(
        server.url + "/push-agent-response", json={"agent": agent, "response": response}
    ).raise_for_status()


def _calls(server: ocmock.MockServer) -> dict[str, Any]:
    return dict(httpx.get(server.url + "/calls").json())


def _settings(server_url: str, tmp: Path, **env: str) -> Settings:
    return Settings.from_env({"OC_BASE_URL": server_url, "OC_FIXTURE_DIR": str(tmp / "fx"), **env})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CTX = {"runId": "run_x", "goal": "build a thing", "inputs": {"a": 1}, "constraints": {}}


def test_client_health_agents_session_and_structured_prompt(oc: ocmock.MockServer) -> None:
    client = OpenCodeClient(oc.url, 5_000)
    assert client.health() and client.agents() == ["plan", "build"]
    sid = client.create_session("run_1")
    _push(oc, "plan", {"design": ["d"], "tests": ["a.ts"]})
    result = client.prompt(sid, "plan", "Goal: x", planner.PLAN_SCHEMA, 3)
    assert result.structured == {"design": ["d"], "tests": ["a.ts"]}
    assert result.total_tokens == 42 and result.responses
    [call] = _calls(oc)["calls"]
    assert (call["session"], call["agent"], call["text"]) == (sid, "plan", "Goal: x")
    assert call["format"] == {"type": "json_schema", "schema": planner.PLAN_SCHEMA, "retryCount": 3}


def test_client_errors(oc: ocmock.MockServer) -> None:
    client = OpenCodeClient(oc.url, 5_000)
    _push(oc, "build", {"error": {"name": "StructuredOutputError", "message": "bad", "attempts": 3}})
    with pytest.raises(StructuredOutputError, match="bad"):
        client.prompt("s", "build", "p", planner.BUILD_SCHEMA, 3)
    _push(oc, "build", {"status": 500})
    with pytest.raises(OcUnavailableError, match="HTTP 500"):
        client.prompt("s", "build", "p", planner.BUILD_SCHEMA, 3)
    down = OpenCodeClient(f"http://127.0.0.1:{_closed_port()}", 2_000)
    assert not down.health()
    with pytest.raises(OcUnavailableError, match="ConnectError"):
        down.create_session("r")


def test_one_stall_reverts_and_retries_concisely_two_stalls_are_terminal(oc: ocmock.MockServer) -> None:
    client = OpenCodeClient(oc.url, 300)  # OC_TIMEOUT_MS: 0.3 s of silence is a stall
    sid = client.create_session("r")
    _push(oc, "plan", {"design": ["earlier"]})
    client.prompt(sid, "plan", "first", planner.PLAN_SCHEMA, 3)
    _push(oc, "plan", {"stallSeconds": 1.0, "design": ["late"]})
    _push(oc, "plan", {"design": ["concise"]})
    result = client.prompt_with_stall_retry(sid, "plan", "Goal: y", planner.PLAN_SCHEMA, 3)
    assert result.structured == {"design": ["concise"]}
    calls = _calls(oc)
    assert [c["text"] for c in calls["calls"]] == ["first", "Goal: y", "Goal: y" + CONCISE]
    assert [r["session"] for r in calls["reverts"]] == [sid] and calls["reverts"][0]["messageID"].startswith(
        "msg_"
    )
    _push(oc, "plan", {"stallSeconds": 1.0})
    _push(oc, "plan", {"stallSeconds": 1.0})
    with pytest.raises(OcTimeoutTerminalError, match="oc_timeout_terminal"):
        client.prompt_with_stall_retry(sid, "plan", "Goal: z", planner.PLAN_SCHEMA, 3)


def test_live_plan_uses_the_model_and_the_ledger_answers_a_re_execution(
    oc: ocmock.MockServer, tmp_path: Path
) -> None:
    s = _settings(oc.url, tmp_path, OC_MODE="live")
    ledger = DictLedger()
    _push(oc, "plan", {"goal": "model goal", "design": ["m"], "files": [], "risks": [], "tests": ["t1.ts"]})
    plan = planner.plan(s, CTX, 1, ledger)
    assert plan == {"goal": "model goal", "design": ["m"], "files": [], "risks": [], "tests": ["t1.ts"]}
    assert planner.plan(s, CTX, 1, ledger) == plan  # re-executed attempt: the recorded answer
    assert len(_calls(oc)["calls"]) == 1
    [row] = ledger.rows.values()
    assert row["op_key"] == planner.Call(
        "run_x", "CompileST", 1, "plan", planner.plan_prompt("build a thing", {"a": 1}, {}),
        planner.PLAN_SCHEMA, planner.PlanAnswer, dict,
    ).op_key  # fmt: skip
    assert len(row["op_key"]) == 64 and row["session_id"].startswith("ses_") and row["error"] is None
    assert [m["message"] for m in _calls(oc)["logs"]] == ["Planning for run run_x"]
    planner.plan(s, CTX, 2, ledger)  # a repair's attempt 2: a new op_key, a new call
    assert len(_calls(oc)["calls"]) == 2


def test_live_decide_and_tool_allowlist(oc: ocmock.MockServer, tmp_path: Path) -> None:
    s = _settings(oc.url, tmp_path, OC_MODE="live")
    approved = {"design": ["d"], "files": [], "risks": [], "tests": ["a.ts"]}
    decision = planner.decide(s, CTX, approved, 1, DictLedger())
    assert decision["structured"] == {
        "patch": [],
        "tests": [f"test{i}.ts" for i in range(5)],
        "test_command": "echo running",
    }
    assert decision["usage"] == {"total_tokens": 42}
    assert decision["prompt"] == planner.decide_prompt(approved, "build a thing")


def test_without_strict_mode_an_unreachable_daemon_falls_back_to_the_producer(tmp_path: Path) -> None:
    s = _settings(f"http://127.0.0.1:{_closed_port()}", tmp_path, OC_MODE="live")
    ledger = DictLedger()
    plan = planner.plan(s, {**CTX, "constraints": {"testHooks": {"tests": ["x.ts"]}}}, 1, ledger)
    assert plan == {
        "goal": "build a thing",
        "design": ["Design for: build a thing"],
        "files": [],
        "risks": [],
        "tests": ["x.ts"],
    }
    [row] = ledger.rows.values()
    assert row["error"]["fallback"] == "producer" and row["error"]["type"] == "oc_live_unavailable"
    assert row["session_id"].startswith("sess_")


def test_strict_mode_turns_an_unreachable_daemon_or_a_bad_answer_into_a_failure(
    oc: ocmock.MockServer, tmp_path: Path
) -> None:
    down = _settings(f"http://127.0.0.1:{_closed_port()}", tmp_path, OC_MODE="live", OC_STRICT_MODE="1")
    with pytest.raises(planner.CompilerError, match="oc_live_unavailable:session"):
        planner.plan(down, CTX, 1, DictLedger())
    strict = _settings(oc.url, tmp_path, OC_MODE="live", OC_STRICT_MODE="true")
    _push(oc, "plan", {"design": ["x"], "unexpected": True})
    ledger = DictLedger()
    with pytest.raises(planner.CompilerError, match="StructuredOutputError:CompileST"):
        planner.plan(strict, CTX, 1, ledger)
    [row] = ledger.rows.values()
    assert row["structured"] is None and "unexpected" in row["error"]["message"]
    assert ledger.answer(row["op_key"]) is None  # a failed call is not replayed
    assert planner.plan(strict, CTX, 1, ledger)["design"] == [
        "default design"
    ]  # ...and may be answered later


def test_a_denied_tool_fails_the_step_after_the_ledger_write(oc: ocmock.MockServer, tmp_path: Path) -> None:
    s = _settings(oc.url, tmp_path, OC_MODE="live")
    ledger = DictLedger()
    call = planner.Call("run_x", "CompileST", 1, "plan", "p", planner.PLAN_SCHEMA, planner.PlanAnswer, dict)
    ledger.record({"op_key": call.op_key, "structured": {}, "response": {
        "structured": {}, "toolcalls": [{"name": "bash", "args": {}}], "responses": []}})  # fmt: skip
    with pytest.raises(planner.CompilerError, match="tool-denied: bash for agent plan"):
        planner.structured(s, call, ledger)
    build = planner.Call(
        "run_x", "DecideST", 1, "build", "p", planner.BUILD_SCHEMA, planner.BuildAnswer, dict
    )
    ledger.record({"op_key": build.op_key, "structured": {}, "response": {
        "structured": {}, "toolcalls": [{"name": "bash", "args": {}}], "responses": []}})  # fmt: skip
    assert planner.structured(s, build, ledger)["toolcalls"] == [{"name": "bash", "args": {}}]


def test_record_writes_the_fixture_replay_reads_it(oc: ocmock.MockServer, tmp_path: Path) -> None:
    record = _settings(oc.url, tmp_path, OC_MODE="record")
    _push(oc, "plan", {"design": ["recorded"], "tests": ["r.ts"]})
    recorded = planner.plan(record, CTX, 1, DictLedger())
    [fixture] = (tmp_path / "fx").iterdir()
    prompt = planner.plan_prompt("build a thing", {"a": 1}, {})
    assert fixture.name == planner.fixture_key(prompt, 424242) + ".json"
    body = json.loads(fixture.read_text())
    assert fixture.read_text().endswith("}\n") and body["seed"] == "424242" and body["schemaVersion"] == 1
    replay = _settings("http://127.0.0.1:9", tmp_path, OC_MODE="replay")  # no server needed
    assert planner.plan(replay, {**CTX, "runId": "run_other"}, 1, DictLedger()) == recorded
    assert recorded["design"] == ["recorded"] and recorded["tests"] == ["r.ts"]
    # Another prompt has no fixture: the built-in producer.
    other = planner.plan(replay, {**CTX, "goal": "other"}, 1, DictLedger())
    assert other["design"] == ["Design for: other"]


def test_the_refresh_fixture_key_is_the_originals() -> None:
    assert planner.fixture_key("refresh-fixture", 424242) == (
        "d932df410941de62efa98450cfed81b570ad4300718d5943828da082c0038d7b"
    )


def test_replay_is_the_built_in_producer(tmp_path: Path) -> None:
    s = _settings("http://127.0.0.1:9", tmp_path)
    ctx = {**CTX, "goal": "please fail me"}
    plan = planner.plan(s, ctx, 1, DictLedger())
    assert plan == {
        "goal": "please fail me",
        "design": ["Design for: please fail me"],
        "files": [],
        "risks": [],
        "tests": [],
    }
    decision = planner.decide(s, ctx, plan, 1, DictLedger())
    assert decision == {
        "prompt": planner.decide_prompt(plan, "please fail me"),
        "toolcalls": [],
        "responses": [],
        "diffs": [],
        "structured": {"patch": [], "tests": [], "test_command": "FAIL_ME"},
    }


def test_oc_settings() -> None:
    assert Settings.from_env({}).oc_base_url == "http://127.0.0.1:4096"
    assert Settings.from_env({"OC_SERVER_PORT": "4196"}).oc_base_url == "http://127.0.0.1:4196"
    assert Settings.from_env({"OC_BASE_URL": "http://oc:1/"}).oc_base_url == "http://oc:1"
    with pytest.raises(ConfigError, match="invalid OC_BASE_URL"):
        Settings.from_env({"OC_BASE_URL": "oc:4096"})
    with pytest.raises(ConfigError, match="invalid boolean env value: yes"):
        Settings.from_env({"OC_STRICT_MODE": "yes"})
    with pytest.raises(ConfigError, match="invalid OC_MODE"):
        Settings.from_env({"OC_MODE": "mock"})
